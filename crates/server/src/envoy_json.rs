//! Envoy resources as proto3 JSON (for `proxy-config`), through envoy-types' own
//! descriptor set embedded at build time.

use std::sync::LazyLock;

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;

static POOL: LazyLock<Option<DescriptorPool>> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/envoy-types.bin"))[..]).ok()
});

/// Renders a packed Envoy resource as JSON (`Any` fields expanded, defaults omitted).
pub fn any_to_json(any: &Any) -> Result<Value, String> {
    let pool = POOL
        .as_ref()
        .ok_or("the Envoy descriptor set did not decode")?;
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    let desc = pool
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown type {name}"))?;
    let msg = DynamicMessage::decode(desc, any.value.as_slice()).map_err(|e| e.to_string())?;
    let opts = SerializeOptions::new().skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
        .map_err(|e| e.to_string())
}

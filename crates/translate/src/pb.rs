//! Small helpers for building Envoy protobuf values: durations, wrappers, `Any`, addresses,
//! config sources and a deterministic encoding of `google.protobuf.Struct`.
//!
//! prost encodes `map<..>` fields in `HashMap` iteration order, which differs between runs.
//! Every map this crate fills therefore holds at most one entry, except `Struct` (JSON access
//! log formats), which [`struct_bytes_sorted`] encodes by hand in key order.

use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source::ConfigSourceSpecifier, socket_address,
};
use envoy_types::pb::google::protobuf::{Any, Duration, Struct, UInt32Value, Value, value::Kind};
use prost::{Message, Name};

/// Packs a message into an `Any` with its canonical type URL.
pub(crate) fn any<T: Name + Message>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

/// A protobuf duration of `ms` milliseconds (negative input is clamped to zero).
pub(crate) fn millis(ms: i64) -> Duration {
    // google.protobuf.Duration allows at most 315,576,000,000 s (10,000 years).
    const MAX_MS: i64 = 315_576_000_000 * 1000;
    let ms = ms.clamp(0, MAX_MS);
    Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// `UInt32Value` from an App Mesh integer, clamped into `0..=u32::MAX`.
pub(crate) fn u32v(v: i64) -> UInt32Value {
    UInt32Value {
        value: clamp_u32(v),
    }
}

/// A `BoolValue`.
pub(crate) fn boolv(value: bool) -> envoy_types::pb::google::protobuf::BoolValue {
    envoy_types::pb::google::protobuf::BoolValue { value }
}

/// Clamps an App Mesh `int`/`long` into `u32`.
pub(crate) fn clamp_u32(v: i64) -> u32 {
    v.clamp(0, i64::from(u32::MAX)) as u32
}

/// A TCP socket address.
pub(crate) fn socket(address: &str, port: u32, ipv4_compat: bool) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ipv4_compat,
            ..Default::default()
        })),
    }
}

/// `ConfigSource` pointing at the ADS stream (v3), used for RDS and EDS.
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// Encodes a `Struct` of string values deterministically (keys in byte order).
///
/// Concatenated encodings of single-entry maps are a valid encoding of the whole map
/// (protobuf merges repeated map entries), so each entry is encoded on its own.
pub(crate) fn struct_bytes_sorted(fields: &std::collections::BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in fields {
        let one = Struct {
            fields: [(
                k.clone(),
                Value {
                    kind: Some(Kind::StringValue(v.clone())),
                },
            )]
            .into_iter()
            .collect(),
        };
        one.encode(&mut out).expect("Vec<u8> grows as needed");
    }
    out
}

/// Appends a length-delimited field (`tag`, `bytes`) to an encoded message.
pub(crate) fn append_bytes_field(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_splits_seconds_and_nanos() {
        assert_eq!(
            millis(1500),
            Duration {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            millis(-3),
            Duration {
                seconds: 0,
                nanos: 0
            }
        );
    }

    #[test]
    fn sorted_struct_round_trips() {
        let fields: std::collections::BTreeMap<_, _> = [
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]
        .into();
        let bytes = struct_bytes_sorted(&fields);
        let decoded = Struct::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.fields.len(), 2);
        assert_eq!(
            decoded.fields["a"].kind,
            Some(Kind::StringValue("1".to_owned()))
        );
        // Same content, same bytes, whatever the map's insertion history.
        assert_eq!(bytes, struct_bytes_sorted(&fields.clone()));
    }
}

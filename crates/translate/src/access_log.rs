//! `logging.accessLog` → Envoy file access loggers (used on both HTTP connection managers and
//! on TCP proxies).
//!
//! - no `format`: Envoy's default format;
//! - `text`: `log_format.text_format_source.inline_string`; a trailing newline is added when
//!   the user's format has none (Envoy writes one line per entry only if the format ends in
//!   `\n`, App Mesh users write formats without it);
//! - `json`: `log_format.json_format`, each `{key, value}` a string field; encoded in key order
//!   by hand (see [`crate::pb::struct_bytes_sorted`]) so the bytes are deterministic.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, SubstitutionFormatString, data_source, substitution_format_string,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    FileAccessLog, file_access_log,
};
use envoy_types::pb::google::protobuf::Any;
use meshplane_model::common::{AccessLog as MeshAccessLog, Logging, LoggingFormat};
use prost::{Message, Name};

/// Envoy's name of the file access logger extension.
const FILE_LOGGER: &str = "envoy.access_loggers.file";
/// Tag of `FileAccessLog.log_format`.
const LOG_FORMAT_TAG: u32 = 5;
/// Tag of `SubstitutionFormatString.json_format`.
const JSON_FORMAT_TAG: u32 = 2;

/// The access loggers for a node's `logging` (empty when it declares none).
pub(crate) fn access_logs(logging: Option<&Logging>) -> Vec<AccessLog> {
    let Some(MeshAccessLog::File(file)) = logging.and_then(|l| l.access_log.as_ref()) else {
        return Vec::new();
    };
    let mut value = FileAccessLog {
        path: file.path.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    match &file.format {
        None => {}
        Some(LoggingFormat::Text(text)) => {
            let mut text = text.clone();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            let sfs = SubstitutionFormatString {
                format: Some(substitution_format_string::Format::TextFormatSource(
                    DataSource {
                        specifier: Some(data_source::Specifier::InlineString(text)),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            };
            let f = FileAccessLog {
                path: file.path.clone(),
                access_log_format: Some(file_access_log::AccessLogFormat::LogFormat(sfs)),
            };
            value = f.encode_to_vec();
        }
        Some(LoggingFormat::Json(pairs)) => {
            let fields: BTreeMap<String, String> = pairs
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect();
            let mut sfs = Vec::new();
            crate::pb::append_bytes_field(
                &mut sfs,
                JSON_FORMAT_TAG,
                &crate::pb::struct_bytes_sorted(&fields),
            );
            crate::pb::append_bytes_field(&mut value, LOG_FORMAT_TAG, &sfs);
        }
    }
    vec![AccessLog {
        name: FILE_LOGGER.to_owned(),
        filter: None,
        config_type: Some(access_log::ConfigType::TypedConfig(Any {
            type_url: FileAccessLog::type_url(),
            value,
        })),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshplane_model::common::{FileAccessLog as MeshFile, JsonFormatRef};

    fn decode(logs: &[AccessLog]) -> FileAccessLog {
        let Some(access_log::ConfigType::TypedConfig(any)) = &logs[0].config_type else {
            panic!("typed config expected")
        };
        FileAccessLog::decode(any.value.as_slice()).unwrap()
    }

    #[test]
    fn json_format_decodes_with_every_key() {
        let logging = Logging {
            access_log: Some(MeshAccessLog::File(MeshFile {
                path: "/dev/stdout".into(),
                format: Some(LoggingFormat::Json(vec![
                    JsonFormatRef {
                        key: "status".into(),
                        value: "%RESPONSE_CODE%".into(),
                    },
                    JsonFormatRef {
                        key: "method".into(),
                        value: "%REQ(:METHOD)%".into(),
                    },
                ])),
            })),
        };
        let f = decode(&access_logs(Some(&logging)));
        assert_eq!(f.path, "/dev/stdout");
        let Some(file_access_log::AccessLogFormat::LogFormat(sfs)) = f.access_log_format else {
            panic!("log_format expected")
        };
        let Some(substitution_format_string::Format::JsonFormat(s)) = sfs.format else {
            panic!("json_format expected")
        };
        assert_eq!(s.fields.len(), 2);
    }

    #[test]
    fn no_logging_means_no_logger() {
        assert!(access_logs(None).is_empty());
        assert!(access_logs(Some(&Logging::default())).is_empty());
    }
}

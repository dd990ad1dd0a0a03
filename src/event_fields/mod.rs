//! The `--set` fields of every custody event kind, in ONE table: each kind's fields with unit
//! and meaning. `event --help`, `docs/events.md` (checked by `tests/events_doc.rs`), the
//! unknown-field error, the station and the detail builder all read it. A field's type comes
//! from the proto descriptor and whether it is required from `policy::presence`, so neither has
//! a second copy here. Pure.
//!
//! Adding an event kind: add its message to `events.proto`'s `EventBody.detail` oneof (the
//! oneof field name is the kind's name) and one [`Kind`] row in `table.rs`; the builder needs
//! no code (`render.rs` writes the help text and the document). `tests/events_doc.rs` fails
//! while a custody detail of the proto (one `EventKind::of` names) has no row, or a row names a
//! field the proto does not have.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind as PKind, MapKey, MessageDescriptor,
    Value,
};

use crate::pb;
use crate::pb::event_body::Detail;
use crate::policy::EventKind;

mod render;
mod table;

pub use render::{help_text, markdown};
pub use table::KINDS;

/// One `--set` field: the proto field it fills, its unit (empty if none) and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The proto field name; the `--set` name is the same without `_unix_nanos` (times), or
    /// `param.NAME` for a map.
    pub proto: &'static str,
    pub unit: &'static str,
    pub about: &'static str,
}

/// One event kind: its name (the `EventBody.detail` oneof field) and its fields.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub name: &'static str,
    pub about: &'static str,
    pub fields: &'static [Field],
}

/// The kind named `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// The names of every kind, comma separated (for messages).
pub fn kind_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// A field's type as the command line takes it, read off the proto descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Text,
    YesNo,
    Number,
    Integer,
    /// RFC 3339, stored as unix nanoseconds.
    Time,
    /// Comma-separated texts.
    List,
    /// `param.NAME=VALUE`, repeatable.
    Params,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::Text => "text",
            Type::YesNo => "yes/no",
            Type::Number => "number",
            Type::Integer => "integer",
            Type::Time => "time",
            Type::List => "list",
            Type::Params => "name=value",
        }
    }
}

/// Whether a field must be given, as `policy::presence` decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    No,
    Yes,
    /// Required, or declared `not_measured.FIELD=why` (records it and opens a hold).
    OrNotMeasured,
}

impl Required {
    pub fn name(self) -> &'static str {
        match self {
            Required::No => "no",
            Required::Yes => "yes",
            Required::OrNotMeasured => "yes, or not_measured",
        }
    }
}

/// A row of the table with what the descriptor and the policy say about it.
#[derive(Debug, Clone)]
pub struct FieldInfo {
    /// The `--set` name.
    pub name: String,
    pub proto: &'static str,
    pub ty: Type,
    pub unit: &'static str,
    pub about: &'static str,
    pub required: Required,
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set is built by build.rs from our protos")
    })
}

fn body_descriptor() -> MessageDescriptor {
    pool()
        .get_message_by_name("celltrail.v1.EventBody")
        .expect("events.proto defines EventBody")
}

/// The detail message of a kind (`None` if the proto has no such oneof field).
pub fn detail_descriptor(kind: &str) -> Option<MessageDescriptor> {
    let field = body_descriptor().get_field_by_name(kind)?;
    field.containing_oneof()?;
    match field.kind() {
        PKind::Message(m) => Some(m),
        _ => None,
    }
}

/// The names of the `EventBody.detail` oneof that are custody events, as the policy classifies
/// them (`EventKind::of`): details written by their own commands (the key registry's, `log
/// rotate`'s log links, and any other the policy does not judge) are not `--set` by `event`.
pub fn proto_kinds() -> Vec<String> {
    let body = body_descriptor();
    let oneof = body
        .oneofs()
        .find(|o| o.name() == "detail")
        .expect("EventBody has a detail oneof");
    oneof
        .fields()
        .filter(|f| {
            let PKind::Message(m) = f.kind() else {
                return false;
            };
            let mut msg = DynamicMessage::new(body.clone());
            msg.set_field(f, Value::Message(DynamicMessage::new(m)));
            pb::EventBody::decode(msg.encode_to_vec().as_slice())
                .ok()
                .and_then(|b| b.detail)
                .is_some_and(|d| EventKind::of(&d).is_some())
        })
        .map(|f| f.name().to_string())
        .collect()
}

fn type_of(fd: &FieldDescriptor) -> Type {
    if fd.is_map() {
        return Type::Params;
    }
    if fd.is_list() {
        return Type::List;
    }
    match fd.kind() {
        PKind::Bool => Type::YesNo,
        PKind::Double | PKind::Float => Type::Number,
        PKind::Int64 | PKind::Sint64 | PKind::Sfixed64 if fd.name().ends_with("_unix_nanos") => {
            Type::Time
        }
        PKind::Int32
        | PKind::Int64
        | PKind::Uint32
        | PKind::Uint64
        | PKind::Sint32
        | PKind::Sint64
        | PKind::Fixed32
        | PKind::Fixed64
        | PKind::Sfixed32
        | PKind::Sfixed64 => Type::Integer,
        _ => Type::Text,
    }
}

fn cli_name(proto: &str, ty: Type) -> String {
    match ty {
        Type::Time => proto.trim_end_matches("_unix_nanos").to_string(),
        Type::Params => "param.NAME".to_string(),
        _ => proto.to_string(),
    }
}

/// The fields of `kind` with their types and whether each is required. Panics if the table
/// names a field the proto does not have (`tests/events_doc.rs` checks every row).
pub fn fields(kind: &Kind) -> Vec<FieldInfo> {
    let desc = detail_descriptor(kind.name)
        .unwrap_or_else(|| panic!("event kind {} is not in EventBody.detail", kind.name));
    let required = EventKind::ALL
        .iter()
        .find(|k| k.name() == kind.name)
        .map(|k| crate::policy::presence::required_field_names(*k))
        .unwrap_or_default();
    kind.fields
        .iter()
        .map(|f| {
            let fd = desc
                .get_field_by_name(f.proto)
                .unwrap_or_else(|| panic!("{} has no field {}", desc.full_name(), f.proto));
            let ty = type_of(&fd);
            FieldInfo {
                name: cli_name(f.proto, ty),
                proto: f.proto,
                ty,
                unit: f.unit,
                about: f.about,
                required: match required.iter().find(|(n, _)| *n == f.proto) {
                    None => Required::No,
                    Some((_, false)) => Required::Yes,
                    Some((_, true)) => Required::OrNotMeasured,
                },
            }
        })
        .collect()
}

/// `name*` for required fields, comma separated (for messages).
pub fn field_list(kind: &Kind) -> String {
    let names: Vec<String> = fields(kind)
        .into_iter()
        .map(|f| match f.required {
            Required::No => f.name,
            _ => format!("{}*", f.name),
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The proto name of a `--set` name of `kind` (`collection_end` -> `collection_end_unix_nanos`),
/// for `not_measured.FIELD`; unknown names are returned as given.
pub fn proto_name(kind: &str, name: &str) -> String {
    self::kind(kind)
        .and_then(|k| fields(k).into_iter().find(|f| f.name == name))
        .map(|f| f.proto.to_string())
        .unwrap_or_else(|| name.to_string())
}

fn parse_value(fd: &FieldDescriptor, name: &str, v: &str) -> Result<Value, String> {
    let t = v.trim();
    let num = |what: &str| format!("--set {name}={v}: not {what}");
    Ok(match fd.kind() {
        PKind::Bool => match t {
            "yes" | "true" | "1" | "y" => Value::Bool(true),
            "no" | "false" | "0" | "n" => Value::Bool(false),
            _ => return Err(format!("--set {name}={v}: expected yes or no")),
        },
        PKind::Double => Value::F64(t.parse().map_err(|_| num("a number"))?),
        PKind::Float => Value::F32(t.parse().map_err(|_| num("a number"))?),
        PKind::Uint32 | PKind::Fixed32 => {
            Value::U32(t.parse().map_err(|_| num("a whole number ≥ 0"))?)
        }
        PKind::Uint64 | PKind::Fixed64 => {
            Value::U64(t.parse().map_err(|_| num("a whole number ≥ 0"))?)
        }
        PKind::Int32 | PKind::Sint32 | PKind::Sfixed32 => {
            Value::I32(t.parse().map_err(|_| num("a whole number"))?)
        }
        PKind::Int64 | PKind::Sint64 | PKind::Sfixed64 if fd.name().ends_with("_unix_nanos") => {
            Value::I64(crate::time::parse_rfc3339(v).map_err(|e| format!("--set {name}: {e}"))?)
        }
        PKind::Int64 | PKind::Sint64 | PKind::Sfixed64 => {
            Value::I64(t.parse().map_err(|_| num("a whole number"))?)
        }
        _ => Value::String(v.to_string()),
    })
}

/// Builds the detail of `kind` from `--set` pairs (not_measured declarations already taken
/// out). Unknown fields are an error listing the valid ones; a required field that cannot be
/// declared not measured must be given (a measurement is left to the server, which accepts a
/// `not_measured` declaration in its place).
pub fn build(kind_name: &str, mut set: BTreeMap<String, String>) -> Result<Detail, String> {
    let kind = kind(kind_name)
        .ok_or_else(|| format!("unknown event kind {kind_name:?}; one of: {}", kind_names()))?;
    let desc = detail_descriptor(kind.name).expect("checked by fields()");
    let infos = fields(kind);
    let known = |k: &str| {
        infos.iter().any(|f| {
            f.name == k || (f.ty == Type::Params && k.len() > 6 && k.starts_with("param."))
        })
    };
    // A typo is named before a missing field: `dn` is more likely meant as `din`.
    if let Some(k) = set.keys().find(|k| !known(k)) {
        return Err(format!(
            "event {} has no field {k:?}; its fields are: {} (* = required)",
            kind.name,
            field_list(kind)
        ));
    }
    let mut msg = DynamicMessage::new(desc.clone());
    for info in &infos {
        let fd = desc
            .get_field_by_name(info.proto)
            .expect("checked by fields()");
        match info.ty {
            Type::Params => {
                let keys: Vec<String> = set
                    .keys()
                    .filter(|k| k.starts_with("param."))
                    .cloned()
                    .collect();
                let mut map = HashMap::new();
                for k in keys {
                    let v = set.remove(&k).unwrap_or_default();
                    map.insert(
                        MapKey::String(k["param.".len()..].to_string()),
                        Value::String(v),
                    );
                }
                if !map.is_empty() {
                    msg.set_field(&fd, Value::Map(map));
                }
            }
            Type::List => {
                if let Some(v) = set.remove(&info.name) {
                    let items: Vec<Value> = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect();
                    msg.set_field(&fd, Value::List(items));
                }
            }
            _ => match set.remove(&info.name) {
                Some(v) if info.ty == Type::Text && v.trim().is_empty() => {}
                Some(v) => msg.set_field(&fd, parse_value(&fd, &info.name, &v)?),
                None => {}
            },
        }
        if info.required == Required::Yes && !msg.has_field(&fd) {
            return Err(format!(
                "event {} needs --set {}=... ({})",
                kind.name, info.name, info.about
            ));
        }
    }
    let oneof = body_descriptor()
        .get_field_by_name(kind.name)
        .expect("checked by detail_descriptor()");
    let mut body = DynamicMessage::new(body_descriptor());
    body.set_field(&oneof, Value::Message(msg));
    let decoded = pb::EventBody::decode(body.encode_to_vec().as_slice())
        .map_err(|e| format!("event {}: {e}", kind.name))?;
    decoded
        .detail
        .ok_or_else(|| format!("event {}: the generated code lacks this kind", kind.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Presence, not defaults (issue 13 point 1): every number or yes/no field of a custody
    /// detail has explicit presence in the proto (proto3 `optional`), so "not given" can never
    /// be read as 0 or false. The exceptions are choices whose default is the documented
    /// ordinary case, not readings.
    #[test]
    fn every_number_and_yes_no_field_of_a_custody_detail_has_presence() {
        // (kind, field): Released.exceptional = false is a normal release.
        const CHOICES: &[(&str, &str)] = &[("released", "exceptional")];
        let mut missing = Vec::new();
        for kind in proto_kinds() {
            let m = detail_descriptor(&kind).expect("a proto kind has a detail");
            for f in m.fields() {
                let scalar = !matches!(
                    f.kind(),
                    PKind::String | PKind::Bytes | PKind::Message(_) | PKind::Enum(_)
                );
                if scalar
                    && !f.is_list()
                    && !f.supports_presence()
                    && !CHOICES.contains(&(kind.as_str(), f.name()))
                {
                    missing.push(format!("{kind}.{}", f.name()));
                }
            }
        }
        assert!(missing.is_empty(), "fields without presence: {missing:?}");
    }

    #[test]
    fn builds_every_type_of_field() {
        let d = build(
            "collected",
            set(&[
                ("din", "A999926123456"),
                ("volume_ml", "250"),
                ("collection_end", "2026-11-29T09:30:00Z"),
            ]),
        )
        .unwrap();
        let Detail::Collected(c) = d else { panic!() };
        assert_eq!(c.din, "A999926123456");
        assert_eq!(c.volume_ml, Some(250));
        assert_eq!(
            c.collection_end_unix_nanos,
            Some(crate::time::parse_rfc3339("2026-11-29T09:30:00Z").unwrap())
        );
        let d = build(
            "manufacturing_step",
            set(&[
                ("step", "expansion"),
                ("param.dose", "3e8"),
                ("product_bag_ids", "A1, A2"),
            ]),
        )
        .unwrap();
        let Detail::ManufacturingStep(m) = d else {
            panic!()
        };
        assert_eq!(m.parameters.get("dose").map(String::as_str), Some("3e8"));
        assert_eq!(m.product_bag_ids, ["A1", "A2"]);
        let d = build(
            "received",
            set(&[("seal_intact", "no"), ("temp_min_c", "2.5")]),
        )
        .unwrap();
        let Detail::Received(r) = d else { panic!() };
        assert_eq!(
            (r.seal_intact, r.temp_min_c, r.temp_max_c),
            (Some(false), Some(2.5), None)
        );
    }

    #[test]
    fn an_unknown_field_error_lists_the_valid_ones() {
        let e = build("hold", set(&[("reason", "r"), ("colour", "red")])).unwrap_err();
        assert!(
            e.contains("\"colour\"") && e.contains("its fields are: reason (* = required)"),
            "{e}"
        );
        let e = build("collected", set(&[("dn", "x")])).unwrap_err();
        assert!(
            e.contains("din*, product_code, volume_ml*, collection_end*"),
            "{e}"
        );
    }

    #[test]
    fn a_required_field_that_is_not_a_reading_must_be_given() {
        let e = build("collected", set(&[("volume_ml", "1")])).unwrap_err();
        assert!(e.starts_with("event collected needs --set din="), "{e}");
        // A reading may be declared not measured instead: the server decides.
        build("collected", set(&[("din", "A999926123456")])).unwrap();
        let e = build("received", set(&[("temp_min_c", "cold")])).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        let e = build("sneezed", set(&[])).unwrap_err();
        assert!(
            e.contains("unknown event kind") && e.contains("custody_handoff"),
            "{e}"
        );
    }

    #[test]
    fn required_comes_from_the_presence_rules() {
        let c = fields(kind("collected").unwrap());
        let req: Vec<(&str, Required)> = c.iter().map(|f| (f.proto, f.required)).collect();
        assert_eq!(
            req,
            [
                ("din", Required::Yes),
                ("product_code", Required::No),
                ("volume_ml", Required::OrNotMeasured),
                ("collection_end_unix_nanos", Required::OrNotMeasured),
            ]
        );
    }

    #[test]
    fn not_measured_takes_the_command_line_name() {
        assert_eq!(
            proto_name("collected", "collection_end"),
            "collection_end_unix_nanos"
        );
        assert_eq!(proto_name("received", "temp_min_c"), "temp_min_c");
    }
}

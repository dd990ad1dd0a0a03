//! Every field of an event detail, decoded by reflection over the proto descriptors (so a field
//! added to `events.proto` appears in the batch record without code here) and shown in human
//! units chosen by the field's name suffix: `_unix_nanos` is a time, `_c` degrees Celsius,
//! `_seconds`/`_minutes`/`_hours`/`_days` a duration, `_ml` millilitres.

use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value,
};
use serde::Serialize;
use std::sync::OnceLock;

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("the embedded descriptor set is built by build.rs from our protos")
    })
}

/// One field of an event detail as a person reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    /// The proto field name, e.g. `temp_min_c`.
    pub name: String,
    /// A label without the unit suffix, e.g. `temp min`.
    pub label: String,
    /// The value in human units, e.g. `3.5 °C`; `not recorded` for an absent optional field.
    pub value: String,
    /// The value for machines: numbers stay numbers, times are unix nanoseconds.
    pub raw: serde_json::Value,
}

/// The detail of an encoded `EventBody`: its kind (the oneof field name) and every field.
/// `None` when the bytes do not decode (a verified event always does).
pub fn detail_fields(body_bytes: &[u8]) -> Option<(String, Vec<Field>)> {
    let desc = pool().get_message_by_name("celltrail.v1.EventBody")?;
    let msg = DynamicMessage::decode(desc.clone(), body_bytes).ok()?;
    let oneof = desc.oneofs().find(|o| o.name() == "detail")?;
    let set = oneof.fields().find(|f| msg.has_field(f))?;
    let Value::Message(detail) = msg.get_field(&set).into_owned() else {
        return None;
    };
    Some((set.name().to_string(), message_fields(&detail)))
}

fn message_fields(m: &DynamicMessage) -> Vec<Field> {
    m.descriptor()
        .fields()
        .map(|f| {
            let present = !f.supports_presence() || m.has_field(&f);
            let (value, raw) = if present {
                let v = m.get_field(&f);
                (show(&f, &v), raw(&v))
            } else {
                ("not recorded".to_string(), serde_json::Value::Null)
            };
            Field {
                name: f.name().to_string(),
                label: label(f.name()),
                value,
                raw,
            }
        })
        .collect()
}

const SUFFIXES: [&str; 7] = [
    "_unix_nanos",
    "_c",
    "_ml",
    "_seconds",
    "_minutes",
    "_hours",
    "_days",
];

/// `temp_min_c` -> `temp min`; `collection_end_unix_nanos` -> `collection end`.
pub fn label(name: &str) -> String {
    let base = SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    base.replace('_', " ")
}

fn show(f: &FieldDescriptor, v: &Value) -> String {
    match v {
        Value::List(items) if items.is_empty() => "none".into(),
        Value::List(items) => items
            .iter()
            .map(|i| scalar(f, i))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Map(map) if map.is_empty() => "none".into(),
        Value::Map(map) => {
            let mut pairs: Vec<(String, String)> = map
                .iter()
                .map(|(k, v)| (map_key(k), scalar(f, v)))
                .collect();
            pairs.sort();
            pairs
                .into_iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        }
        other => scalar(f, other),
    }
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

fn scalar(f: &FieldDescriptor, v: &Value) -> String {
    let name = f.name();
    let num = |x: f64| -> String {
        if name.ends_with("_c") {
            format!("{x} °C")
        } else if name.ends_with("_ml") {
            format!("{x} mL")
        } else if name.ends_with("_seconds") {
            format!("{x} s ({})", duration(x * 1e9))
        } else if name.ends_with("_minutes") {
            format!("{x} min")
        } else if name.ends_with("_hours") {
            format!("{x} h")
        } else if name.ends_with("_days") {
            format!("{x} d")
        } else {
            x.to_string()
        }
    };
    match v {
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::I64(n) if name.ends_with("_unix_nanos") => time_or_unset(*n),
        Value::I32(n) => num(f64::from(*n)),
        Value::I64(n) => num(*n as f64),
        Value::U32(n) => num(f64::from(*n)),
        Value::U64(n) => num(*n as f64),
        Value::F32(x) => num(f64::from(*x)),
        Value::F64(x) => num(*x),
        Value::String(s) if s.is_empty() => "—".into(),
        Value::String(s) => s.clone(),
        Value::Bytes(b) => hex::encode(b),
        Value::EnumNumber(n) => match f.kind() {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| n.to_string(), |v| v.name().to_string()),
            _ => n.to_string(),
        },
        Value::Message(m) => message_fields(m)
            .into_iter()
            .map(|f| format!("{}: {}", f.label, f.value))
            .collect::<Vec<_>>()
            .join("; "),
        Value::List(_) | Value::Map(_) => show(f, v),
    }
}

fn raw(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Bool(b) => J::Bool(*b),
        Value::I32(n) => J::from(*n),
        Value::I64(n) => J::from(*n),
        Value::U32(n) => J::from(*n),
        Value::U64(n) => J::from(*n),
        Value::F32(x) => J::from(f64::from(*x)),
        Value::F64(x) => J::from(*x),
        Value::String(s) => J::String(s.clone()),
        Value::Bytes(b) => J::String(hex::encode(b)),
        Value::EnumNumber(n) => J::from(*n),
        Value::Message(m) => J::Object(
            m.fields()
                .map(|(f, v)| (f.name().to_string(), raw(v)))
                .collect(),
        ),
        Value::List(items) => J::Array(items.iter().map(raw).collect()),
        Value::Map(map) => J::Object(map.iter().map(|(k, v)| (map_key(k), raw(v))).collect()),
    }
}

/// A recorded time for people: UTC, and local time when the local zone is not UTC.
pub fn time_or_unset(nanos: i64) -> String {
    if nanos == 0 {
        "not recorded".into()
    } else {
        crate::time::rfc3339(nanos)
    }
}

/// Local time of the machine rendering the record, with its UTC offset.
pub fn local_time(nanos: i64) -> String {
    let secs = nanos.div_euclid(crate::time::NANOS_PER_SEC);
    let sub = nanos.rem_euclid(crate::time::NANOS_PER_SEC) as u32;
    match chrono::DateTime::from_timestamp(secs, sub) {
        Some(t) => t
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        None => crate::time::rfc3339(nanos),
    }
}

/// `5400e9` nanoseconds -> `1 h 30 min`; under a minute in seconds; over two days in days.
pub fn duration(nanos: f64) -> String {
    let neg = nanos < 0.0;
    let s = (nanos.abs() / 1e9).round() as u64;
    let text = if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else if s < 48 * 3600 {
        let m = (s % 3600) / 60;
        if m == 0 {
            format!("{} h", s / 3600)
        } else {
            format!("{} h {m} min", s / 3600)
        }
    } else {
        let h = (s % 86_400) / 3600;
        if h == 0 {
            format!("{} d", s / 86_400)
        } else {
            format!("{} d {h} h", s / 86_400)
        }
    };
    if neg {
        format!("-{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{event_body::Detail, EventBody, Received};
    use prost::Message;

    #[test]
    fn every_field_of_a_detail_is_decoded_in_human_units() {
        let body = EventBody {
            chain_id: "BAG-1".into(),
            detail: Some(Detail::Received(Received {
                from_site: "APH-1".into(),
                seal_intact: Some(true),
                temp_min_c: Some(3.5),
                temp_max_c: Some(6.0),
                elapsed_seconds: Some(5400),
                shipper_id: String::new(),
            })),
            ..Default::default()
        };
        let (kind, fields) = detail_fields(&body.encode_to_vec()).unwrap();
        assert_eq!(kind, "received");
        let got: Vec<(&str, &str)> = fields
            .iter()
            .map(|f| (f.label.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("from site", "APH-1"),
                ("seal intact", "yes"),
                ("temp min", "3.5 °C"),
                ("temp max", "6 °C"),
                ("elapsed", "5400 s (1 h 30 min)"),
                ("shipper id", "—"),
            ]
        );
        assert_eq!(fields[4].raw, serde_json::json!(5400));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(59e9), "59 s");
        assert_eq!(duration(90.0 * 60e9), "1 h 30 min");
        assert_eq!(duration(3.0 * 86_400e9 + 3600e9), "3 d 1 h");
        assert_eq!(duration(-120e9), "-2 min");
    }
}

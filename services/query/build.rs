//! Derives the JSON Schemas of the view rows (OpenAPI 3.1 `components.schemas`)
//! from the `.proto` files, as `pbjson` writes them: original field names,
//! 64-bit integers as strings, bytes as base64, enums by name, default
//! values left out. The schemas then cannot drift from the Rust types.

use std::path::PathBuf;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto};
use serde_json::{json, Map, Value};

const PACKAGE_PREFIX: &str = ".twinlog.v1.";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../../proto/proto");
    let files = [
        root.join("twinlog/v1/events.proto"),
        root.join("twinlog/v1/audit.proto"),
        root.join("twinlog/v1/views.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let set = protox::compile(&files, [&root])?;
    let mut schemas = Map::new();
    for file in &set.file {
        for message in &file.message_type {
            add_message(&mut schemas, "", message);
        }
        for e in &file.enum_type {
            add_enum(&mut schemas, "", e);
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("view_schemas.json");
    std::fs::write(out, serde_json::to_vec_pretty(&Value::Object(schemas))?)?;
    Ok(())
}

fn add_enum(schemas: &mut Map<String, Value>, prefix: &str, e: &EnumDescriptorProto) {
    let names: Vec<Value> = e.value.iter().map(|v| json!(v.name())).collect();
    schemas.insert(
        format!("{prefix}{}", e.name()),
        json!({"type": "string", "enum": names}),
    );
}

fn add_message(schemas: &mut Map<String, Value>, prefix: &str, m: &DescriptorProto) {
    let name = format!("{prefix}{}", m.name());
    let nested_prefix = format!("{name}.");
    for e in &m.enum_type {
        add_enum(schemas, &nested_prefix, e);
    }
    for n in &m.nested_type {
        if n.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        add_message(schemas, &nested_prefix, n);
    }
    let mut properties = Map::new();
    for f in &m.field {
        let mut schema = scalar_or_ref(f.r#type(), f.type_name());
        if f.label() == Label::Repeated {
            let entry = m.nested_type.iter().find(|n| {
                n.options.as_ref().is_some_and(|o| o.map_entry())
                    && f.type_name().ends_with(&format!(".{}", n.name()))
            });
            schema = match entry {
                Some(entry) => {
                    let value = entry
                        .field
                        .iter()
                        .find(|v| v.number() == 2)
                        .map(|v| scalar_or_ref(v.r#type(), v.type_name()))
                        .unwrap_or_else(|| json!({}));
                    json!({"type": "object", "additionalProperties": value})
                }
                None => json!({"type": "array", "items": schema}),
            };
        }
        properties.insert(f.name().to_string(), schema);
    }
    schemas.insert(
        name,
        json!({"type": "object", "properties": properties, "additionalProperties": false}),
    );
}

fn scalar_or_ref(t: Type, type_name: &str) -> Value {
    match t {
        Type::Double | Type::Float => json!({"type": ["number", "string"]}),
        Type::Int64 | Type::Uint64 | Type::Sint64 | Type::Fixed64 | Type::Sfixed64 => {
            json!({"type": "string", "pattern": "^-?[0-9]+$"})
        }
        Type::Int32 | Type::Uint32 | Type::Sint32 | Type::Fixed32 | Type::Sfixed32 => {
            json!({"type": "integer"})
        }
        Type::Bool => json!({"type": "boolean"}),
        Type::String => json!({"type": "string"}),
        Type::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Type::Enum | Type::Message | Type::Group => {
            let name = type_name.strip_prefix(PACKAGE_PREFIX).unwrap_or(type_name);
            json!({"$ref": format!("#/components/schemas/{name}")})
        }
    }
}

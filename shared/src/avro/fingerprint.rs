//! Schema fingerprints as the Avro specification defines them: the CRC-64-AVRO
//! (Rabin) fingerprint of the schema's Parsing Canonical Form, written
//! little-endian in single-object headers.
//!
//! Both are computed here from the schema's JSON rather than with
//! `apache_avro::Schema::fingerprint`: `apache_avro` 0.21 writes a logical type
//! such as `{"type":"string","logicalType":"uuid"}` as `{"type":"string"}` in
//! the canonical form instead of `"string"` (rule [PRIMITIVES]), so its
//! fingerprints differ from those of Java, Python (fastavro) and the other
//! implementations that producers use (upstream: AVRO-4004).

use std::collections::HashSet;

use serde_json::Value as Json;

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The single-object fingerprint of `schema`: CRC-64-AVRO of its Parsing
/// Canonical Form, little-endian.
pub(crate) fn fingerprint(schema: &Json) -> [u8; 8] {
    rabin(canonical_form(schema).as_bytes()).to_le_bytes()
}

/// The Parsing Canonical Form of `schema` (the spec's rules [PRIMITIVES],
/// [FULLNAMES], [STRIP], [ORDER], [STRINGS], [INTEGERS], [WHITESPACE]).
pub(crate) fn canonical_form(schema: &Json) -> String {
    let mut out = String::new();
    write_pcf(schema, "", &mut HashSet::new(), &mut out);
    out
}

fn quoted(s: &str) -> String {
    Json::String(s.to_owned()).to_string()
}

/// `name` qualified by `namespace` unless it has a dot already.
fn full_name(name: &str, namespace: &str) -> String {
    if name.contains('.') || namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}.{name}")
    }
}

fn write_pcf(node: &Json, namespace: &str, defined: &mut HashSet<String>, out: &mut String) {
    match node {
        Json::String(name) if PRIMITIVES.contains(&name.as_str()) => out.push_str(&quoted(name)),
        Json::String(name) => out.push_str(&quoted(&full_name(name, namespace))),
        Json::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_pcf(b, namespace, defined, out);
            }
            out.push(']');
        }
        Json::Object(obj) => {
            let ty = obj.get("type").unwrap_or(&Json::Null);
            let Some(ty_name) = ty.as_str() else {
                // {"type": {...}} or {"type": [...]}: the inner schema is the schema.
                return write_pcf(ty, namespace, defined, out);
            };
            match ty_name {
                "record" | "error" | "enum" | "fixed" => {
                    let ns = obj
                        .get("namespace")
                        .and_then(Json::as_str)
                        .unwrap_or(namespace);
                    let name = full_name(
                        obj.get("name").and_then(Json::as_str).unwrap_or_default(),
                        ns,
                    );
                    if !defined.insert(name.clone()) {
                        return out.push_str(&quoted(&name));
                    }
                    let inner_ns = name.rsplit_once('.').map_or("", |(ns, _)| ns).to_owned();
                    out.push_str(&format!(
                        "{{\"name\":{},\"type\":{}",
                        quoted(&name),
                        quoted(ty_name)
                    ));
                    if let Some(fields) = obj.get("fields").and_then(Json::as_array) {
                        out.push_str(",\"fields\":[");
                        for (i, f) in fields.iter().enumerate() {
                            if i > 0 {
                                out.push(',');
                            }
                            let fname = f.get("name").and_then(Json::as_str).unwrap_or_default();
                            out.push_str(&format!("{{\"name\":{},\"type\":", quoted(fname)));
                            write_pcf(
                                f.get("type").unwrap_or(&Json::Null),
                                &inner_ns,
                                defined,
                                out,
                            );
                            out.push('}');
                        }
                        out.push(']');
                    }
                    if let Some(symbols) = obj.get("symbols").and_then(Json::as_array) {
                        let symbols: Vec<String> = symbols
                            .iter()
                            .filter_map(Json::as_str)
                            .map(quoted)
                            .collect();
                        out.push_str(&format!(",\"symbols\":[{}]", symbols.join(",")));
                    }
                    if let Some(size) = obj.get("size").and_then(Json::as_u64) {
                        out.push_str(&format!(",\"size\":{size}"));
                    }
                    out.push('}');
                }
                "array" => {
                    out.push_str("{\"type\":\"array\",\"items\":");
                    write_pcf(
                        obj.get("items").unwrap_or(&Json::Null),
                        namespace,
                        defined,
                        out,
                    );
                    out.push('}');
                }
                "map" => {
                    out.push_str("{\"type\":\"map\",\"values\":");
                    write_pcf(
                        obj.get("values").unwrap_or(&Json::Null),
                        namespace,
                        defined,
                        out,
                    );
                    out.push('}');
                }
                // A primitive, possibly with a logical type: its simple form.
                other => write_pcf(&Json::String(other.to_owned()), namespace, defined, out),
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

/// The CRC-64-AVRO fingerprint of `data`.
pub(crate) fn rabin(data: &[u8]) -> u64 {
    data.iter().fold(EMPTY, |fp, b| {
        (fp >> 8) ^ TABLE[((fp ^ u64::from(*b)) & 0xff) as usize]
    })
}

#[cfg(test)]
mod tests {
    use apache_avro::rabin::Rabin;
    use apache_avro::Schema;

    use super::*;

    fn json(s: &str) -> Json {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn rabin_agrees_with_apache_avro() {
        for s in [
            r#""int""#,
            r#"{"type":"map","values":"string"}"#,
            r#"{"type":"enum","name":"E","symbols":["a"]}"#,
        ] {
            let lib = Schema::parse_str(s).unwrap().fingerprint::<Rabin>().bytes;
            assert_eq!(fingerprint(&json(s)).to_vec(), lib, "{s}");
        }
    }

    #[test]
    fn logical_types_take_their_primitive_form() {
        let s = json(
            r#"{"type":"record","name":"R","namespace":"a.b","doc":"x","fields":[
            {"name":"id","type":{"type":"string","logicalType":"uuid"},"doc":"d"},
            {"name":"t","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null},
            {"name":"e","type":{"type":"enum","name":"E","symbols":["x","y"],"default":"x"}},
            {"name":"e2","type":"E"},
            {"name":"f","type":{"type":"fixed","name":"c.F","size":4}}]}"#,
        );
        assert_eq!(
            canonical_form(&s),
            r#"{"name":"a.b.R","type":"record","fields":[{"name":"id","type":"string"},{"name":"t","type":["null","long"]},{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["x","y"]}},{"name":"e2","type":"a.b.E"},{"name":"f","type":{"name":"c.F","type":"fixed","size":4}}]}"#
        );
    }

    /// Without logical types, `apache_avro`'s canonical form is right: ours must match it.
    #[test]
    fn agrees_with_apache_avro_on_weft_schemas_without_logical_types() {
        fn strip(node: &mut Json) {
            match node {
                Json::Object(obj) => {
                    obj.remove("logicalType");
                    obj.values_mut().for_each(strip);
                }
                Json::Array(items) => items.iter_mut().for_each(strip),
                _ => {}
            }
        }
        for e in crate::avro::schemas::entries() {
            let mut tree = json(e.json);
            let ours = canonical_form(&tree);
            strip(&mut tree);
            let lib = Schema::parse(&tree).unwrap().canonical_form();
            assert_eq!(ours, lib, "{}", e.name);
        }
    }
}

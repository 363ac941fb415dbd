//! docs/reference/api.md, rendered from the CRDs (`crds()`, what `dhis2-operator crd` prints):
//! per kind its description, then every field of `spec` and `status` with its type, whether it
//! is required, its default and its description — the doc comments of src/crd/, as
//! `kubectl explain` shows them. Pure: the CRDs' JSON in, Markdown out, in the CRDs' order.

use serde_json::Value;

use crate::markdown::literal_angle_brackets;

/// The whole page for `crds` (as `crds()` returns them).
pub fn render(crds: &[Value], generated_by: &str) -> String {
    let mut out = String::from("# API reference\n\n");
    out.push_str(&format!(
        "Generated from the custom resource definitions (src/crd/) by `{generated_by}`: do not \
         edit this file, change the doc comments there and run it again. `kubectl explain \
         dhis2instance.spec` shows the same descriptions.\n\n"
    ));
    for crd in crds {
        let kind = text(&crd["spec"]["names"]["kind"]);
        out.push_str(&format!("- [{kind}](#{})\n", kind.to_lowercase()));
    }
    for crd in crds {
        out.push('\n');
        out.push_str(&kind_section(crd));
    }
    out
}

fn kind_section(crd: &Value) -> String {
    let spec = &crd["spec"];
    let kind = text(&spec["names"]["kind"]);
    let group = text(&spec["group"]);
    let mut out = format!("## {kind}\n\n");
    let short_names: Vec<String> = strings(&spec["names"]["shortNames"])
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect();
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    for version in &versions {
        let name = text(&version["name"]);
        out.push_str(&format!(
            "`apiVersion: {group}/{name}`, {} ({}); `kubectl get {}`",
            text(&spec["scope"]).to_lowercase(),
            if short_names.is_empty() {
                "no short names".to_string()
            } else {
                format!("short names {}", short_names.join(", "))
            },
            text(&spec["names"]["plural"]),
        ));
        out.push_str(".\n\n");
        let schema = &version["schema"]["openAPIV3Schema"];
        if let Some(description) = schema["description"].as_str() {
            out.push_str(&paragraphs(description));
            out.push_str("\n\n");
        }
        let heading = |part: &str| match versions.len() {
            1 => format!("### {part}\n\n"),
            _ => format!("### {part} ({name})\n\n"),
        };
        for part in ["spec", "status"] {
            let Some(part_schema) = schema["properties"].get(part) else {
                continue;
            };
            out.push_str(&heading(part));
            if let Some(description) = part_schema["description"].as_str() {
                out.push_str(&paragraphs(description));
                out.push_str("\n\n");
            }
            if part == "status" {
                out.push_str("Written by the operator.\n\n");
            }
            let mut rows = Vec::new();
            fields(part_schema, part, &mut rows);
            out.push_str(&table(&rows));
            out.push('\n');
        }
    }
    out
}

/// One field of a schema, at its path (`spec.backup.repository.s3.bucket`).
struct Field {
    path: String,
    type_text: String,
    required: bool,
    default: Option<String>,
    description: String,
}

/// The fields under `schema` (an object's properties, an array's items as `path[]`, a map's
/// values as `path.<key>`), depth first, in the schema's order.
fn fields(schema: &Value, path: &str, out: &mut Vec<Field>) {
    let required = strings(&schema["required"]);
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let property_path = format!("{path}.{name}");
            out.push(Field {
                path: property_path.clone(),
                type_text: type_text(property),
                required: required.iter().any(|r| r == name),
                default: property.get("default").map(default_text),
                description: property["description"]
                    .as_str()
                    .map(paragraphs)
                    .unwrap_or_default(),
            });
            fields(property, &property_path, out);
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        fields(items, &format!("{path}[]"), out);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        fields(values, &format!("{path}.<key>"), out);
    }
}

/// `string`, `integer, from 0 to 20`, `array of string`, `map of string`, `one of `a`, `b``.
fn type_text(schema: &Value) -> String {
    let base = if schema["x-kubernetes-int-or-string"] == Value::Bool(true) {
        "integer or string".to_string()
    } else {
        match schema["type"].as_str() {
            Some("array") => match schema.get("items") {
                Some(items) => format!("array of {}", type_text(items)),
                None => "array".to_string(),
            },
            Some("object") => match schema.get("additionalProperties") {
                Some(values) if values.is_object() => format!("map of {}", type_text(values)),
                _ => "object".to_string(),
            },
            Some(t) => match schema["format"].as_str() {
                Some(format) if t == "string" => format!("string ({format})"),
                _ => t.to_string(),
            },
            None => "any".to_string(),
        }
    };
    let mut parts = vec![base];
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| format!("`{}`", text(v))).collect();
        parts.push(format!("one of {}", values.join(", ")));
    }
    if let Some(range) = range_text(&schema["minimum"], &schema["maximum"], "") {
        parts.push(range);
    }
    if let Some(range) = range_text(&schema["minLength"], &schema["maxLength"], "length ") {
        parts.push(range);
    }
    if let Some(range) = range_text(&schema["minItems"], &schema["maxItems"], "items: ") {
        parts.push(range);
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        parts.push(format!("matching `{pattern}`"));
    }
    parts.join(", ")
}

fn range_text(min: &Value, max: &Value, what: &str) -> Option<String> {
    match (number(min), number(max)) {
        (Some(min), Some(max)) => Some(format!("{what}from {min} to {max}")),
        (Some(min), None) => Some(format!("{what}at least {min}")),
        (None, Some(max)) => Some(format!("{what}at most {max}")),
        (None, None) => None,
    }
}

/// `1` for 1.0 (schemars writes bounds as floats).
fn number(value: &Value) -> Option<String> {
    let n = value.as_f64()?;
    Some(if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    })
}

fn default_text(value: &Value) -> String {
    match value {
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

fn table(rows: &[Field]) -> String {
    if rows.is_empty() {
        return "No fields.\n".to_string();
    }
    let mut out = String::from(
        "| Field | Type | Required | Default | Description |\n| --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            row.path,
            cell(&row.type_text),
            if row.required { "yes" } else { "" },
            cell(row.default.as_deref().unwrap_or_default()),
            cell(&row.description),
        ));
    }
    out
}

/// A doc comment as Markdown: lines wrapped in the source joined, paragraphs kept.
fn paragraphs(description: &str) -> String {
    let joined = description
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    literal_angle_brackets(&joined)
}

/// Text fit for a table cell: one line, `|` escaped (in code too, as GitHub wants).
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace("\n\n", "<br><br>")
        .replace('\n', " ")
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        render(&crate::crd::crds(), "GENERATOR")
    }

    #[test]
    fn every_kind_has_its_own_description_and_its_fields() {
        let page = page();
        for crd in crate::crd::crds() {
            let kind = text(&crd["spec"]["names"]["kind"]);
            assert!(page.contains(&format!("\n## {kind}\n")), "{kind} missing");
            let description =
                crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
            assert!(
                !description.is_empty() && !description.contains("Auto-generated"),
                "{kind} has no description of its own (#[kube(doc = …)]): {description:?}"
            );
            assert!(page.contains(&paragraphs(&description)), "{kind}");
        }
        assert!(!page.contains("Auto-generated derived type"), "{page}");
        assert!(page.contains("GENERATOR"), "the page says how it is made");
    }

    #[test]
    fn a_field_row_has_its_path_type_required_default_and_description() {
        let page = page();
        assert!(
            page.contains(
                "| `spec.backup.repository.s3.bucket` | string, length from 3 to 63 | yes |  | Bucket name. |"
            ),
            "{page}"
        );
        assert!(
            page.contains("| `spec.replicas` | integer, from 0 to 20 |  | `1` | DHIS2 replicas;"),
            "{page}"
        );
        assert!(
            page.contains(
                "| `spec.deletionPolicy` | string, one of `Retain`, `Delete` |  | `Retain` |"
            ),
            "{page}"
        );
        assert!(
            page.contains("| `spec.dhisConf` | map of string |"),
            "{page}"
        );
        assert!(page.contains("| `status.conditions[].type` |"), "{page}");
    }

    #[test]
    fn table_cells_stay_one_line_and_keep_their_pipes_and_tags_literal() {
        assert_eq!(
            cell(&paragraphs("a `x|y` and <database>\nwrapped\n\nnext")),
            "a `x\\|y` and &lt;database> wrapped<br><br>next"
        );
    }
}

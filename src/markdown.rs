//! Plain text (doc comments, help texts) inside generated Markdown (docs/reference/).

/// `<` outside code spans written `&lt;`, so that `<database>__replaced_<time>` is shown, not
/// taken for an HTML tag and hidden.
pub fn literal_angle_brackets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for c in text.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.push(c);
            }
            '<' if !in_code => out.push_str("&lt;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_angle_brackets_outside_code_are_escaped() {
        assert_eq!(
            literal_angle_brackets("kept as <db>__replaced_<time>, `<id>` stays"),
            "kept as &lt;db>__replaced_&lt;time>, `<id>` stays"
        );
    }
}

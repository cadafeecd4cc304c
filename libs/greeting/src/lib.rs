//! Formats the greeting that the `greeter` service prints and serves.

/// The greeting for `name`, given the template text (a file shipped in the
/// image). `{name}` in the template is replaced by `name`.
pub fn render(template: &str, name: &str) -> String {
    template.trim_end().replace("{name}", name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn substitutes_the_name() {
        assert_eq!(super::render("hello, {name}!\n", "world"), "hello, world!");
    }
}

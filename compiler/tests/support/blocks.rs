//! The fenced ```` ```eflow ```` blocks of a text, shared by the tests of the
//! diagnostics' explanations.

/// The fenced `eflow` blocks of an explanation.
pub fn eflow_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```eflow") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unclosed block in:\n{text}");
    blocks
}

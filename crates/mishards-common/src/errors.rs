//! Error text for people.

/// An error and its causes, `: `-separated, each cause once (tonic's and hyper's own text is just
/// "transport error" / "client error"; the cause says what happened).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

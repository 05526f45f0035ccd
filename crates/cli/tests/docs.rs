//! Documentation that is generated from the code must match the code.

/// docs/diagrams.md is the output of `kuper-bridge diagrams`; regenerate it with
/// `cargo run -p kuper-bridge -- diagrams > docs/diagrams.md` when the rules change.
#[test]
fn committed_diagrams_match_the_state_machines() {
    let committed = include_str!("../../../docs/diagrams.md");
    let generated = kuper_bridge_domain::diagram::document();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| format!("line {}: committed {a:?}, code {b:?}", i + 1))
            .unwrap_or_else(|| "the files differ in length".into());
        panic!("docs/diagrams.md is out of date ({first_difference}); regenerate with `cargo run -p kuper-bridge -- diagrams > docs/diagrams.md`");
    }
}

#[test]
fn diagrams_cover_every_scheme() {
    let doc = kuper_bridge_domain::diagram::document();
    for heading in ["## A — ", "## B — ", "## C — "] {
        assert_eq!(doc.matches(heading).count(), 2, "{heading} with and without restaurant");
    }
    assert_eq!(doc.matches("```mermaid").count(), 12);
}

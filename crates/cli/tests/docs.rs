//! Documentation must match the code: the generated diagrams, the commands and flags the
//! READMEs and interfaces.md name (the binary's `--help`), and the README examples, which
//! must be the same in both languages and work with the shipped `kuper-bridge.toml`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use std::collections::{BTreeMap, BTreeSet};

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

// ---------------------------------------------------------------------------------------------
// README.md, README.ru.md and docs/interfaces.md: commands the binary has, the same in both
// languages, and examples that work with the shipped config.

const README_EN: (&str, &str) = ("README.md", include_str!("../../../README.md"));
const README_RU: (&str, &str) = ("README.ru.md", include_str!("../../../README.ru.md"));
const INTERFACES: (&str, &str) = ("docs/interfaces.md", include_str!("../../../docs/interfaces.md"));
const SHIPPED_CONFIG: &str = include_str!("../../../kuper-bridge.toml");

/// Subcommands whose second word names the command (`sim run`, `outbox skip`).
const GROUPS: &[&str] = &["sim", "config", "orders", "outbox", "operators"];

/// A fenced code block: its language and its logical lines (`\`-continuations joined).
struct Block {
    lang: String,
    lines: Vec<String>,
}

/// The fenced blocks of a Markdown document, in order, and the inline code spans outside them
/// (a span may run over a line break, not over a paragraph).
fn code_of(markdown: &str) -> (Vec<Block>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut inline = Vec::new();
    let mut current: Option<Block> = None;
    let mut pending = String::new();
    let mut paragraph = String::new();
    let mut spans = |paragraph: &mut String| {
        inline.extend(
            paragraph.split('`').skip(1).step_by(2).map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")),
        );
        paragraph.clear();
    };
    for line in markdown.lines() {
        let trimmed = line.trim();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with("```")) {
            spans(&mut paragraph);
        }
        if let Some(lang) = trimmed.strip_prefix("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => current = Some(Block { lang: lang.trim().to_string(), lines: Vec::new() }),
            }
            pending.clear();
            continue;
        }
        match &mut current {
            Some(block) => {
                let joined = format!("{pending}{trimmed}");
                match joined.strip_suffix('\\') {
                    Some(head) => pending = format!("{} ", head.trim_end()),
                    None => {
                        block.lines.push(joined);
                        pending.clear();
                    }
                }
            }
            None => {
                paragraph.push_str(line);
                paragraph.push('\n');
            }
        }
    }
    spans(&mut paragraph);
    assert!(current.is_none(), "a code block is not closed");
    (blocks, inline)
}

/// A shell line without its trailing comment (a `#` that starts a word).
fn without_comment(line: &str) -> &str {
    if line.starts_with('#') {
        return "";
    }
    match line.find(" #") {
        Some(i) => line[..i].trim_end(),
        None => line,
    }
}

/// The arguments of a `kuper-bridge` invocation: after `-p kuper-bridge --` in a `cargo run`
/// line, or after a leading `kuper-bridge`.
fn kuper_bridge_args(line: &str) -> Option<&str> {
    const CARGO: &str = "-p kuper-bridge -- ";
    let line = without_comment(line);
    if let Some(i) = line.find(CARGO) {
        return Some(&line[i + CARGO.len()..]);
    }
    line.trim_start().strip_prefix("kuper-bridge ")
}

/// `(subcommand, flags)` of an invocation's arguments: `sim run` and its `--flags`
/// (brackets, `=value` and punctuation removed).
fn subcommand_and_flags(args: &str) -> (String, BTreeSet<String>) {
    let tokens: Vec<&str> = args.split_whitespace().collect();
    let flag = |t: &str| -> Option<String> {
        let t = t.trim_start_matches(['[', '(']);
        t.starts_with("--")
            .then(|| t.split('=').next().unwrap_or(t).trim_end_matches([']', ')', ',', ';', '.', '…']).to_string())
    };
    let mut flags = BTreeSet::new();
    let mut i = 0;
    // Global options before the subcommand (`kuper-bridge --config old.toml orders show REF`).
    while i < tokens.len() && tokens[i].starts_with("--") {
        flags.extend(flag(tokens[i]));
        i += if tokens[i].contains('=') { 1 } else { 2 };
    }
    let mut name = tokens.get(i).copied().unwrap_or("").to_string();
    if GROUPS.contains(&name.as_str()) {
        if let Some(next) = tokens.get(i + 1).filter(|t| !t.starts_with(['-', '['])) {
            name = format!("{name} {next}");
        }
    }
    flags.extend(tokens.iter().skip(i).copied().filter_map(flag));
    (name, flags)
}

/// Every `kuper-bridge` invocation of a README (code blocks, then inline code), by subcommand.
fn flags_by_subcommand(markdown: &str) -> BTreeMap<String, BTreeSet<String>> {
    let (blocks, inline) = code_of(markdown);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let lines = blocks
        .iter()
        .filter(|b| !matches!(b.lang.as_str(), "toml" | "python" | "json"))
        .flat_map(|b| b.lines.iter().cloned())
        .chain(inline);
    for line in lines {
        if let Some(args) = kuper_bridge_args(&line) {
            let (name, flags) = subcommand_and_flags(args);
            out.entry(name).or_default().extend(flags);
        }
    }
    out
}

/// The two READMEs give the same commands: per subcommand, the same set of flags. A
/// translation that drops `--merchant-api` runs every scenario into a failure.
#[test]
fn readmes_give_the_same_commands_with_the_same_flags() {
    let en = flags_by_subcommand(README_EN.1);
    let ru = flags_by_subcommand(README_RU.1);
    for (name, flags) in
        [("serve", &["--sandbox"][..]), ("sim run", &["--target", "--listen", "--merchant-api", "--api-key"])]
    {
        let found = en.get(name).unwrap_or_else(|| panic!("README.md: no `kuper-bridge {name}` found: {en:?}"));
        for f in flags {
            assert!(found.contains(*f), "README.md: `{name}` without {f}: the extraction is broken? {found:?}");
        }
    }
    let mut problems = Vec::new();
    for name in en.keys().chain(ru.keys()).collect::<BTreeSet<_>>() {
        let (Some(e), Some(r)) = (en.get(name), ru.get(name)) else {
            let (has, lacks) =
                if en.contains_key(name) { (README_EN.0, README_RU.0) } else { (README_RU.0, README_EN.0) };
            problems.push(format!("`{name}`: in {has}, not in {lacks}"));
            continue;
        };
        let only_en: Vec<_> = e.difference(r).collect();
        let only_ru: Vec<_> = r.difference(e).collect();
        if !only_en.is_empty() {
            problems.push(format!("`{name}`: {only_en:?} only in {}", README_EN.0));
        }
        if !only_ru.is_empty() {
            problems.push(format!("`{name}`: {only_ru:?} only in {}", README_RU.0));
        }
    }
    assert!(problems.is_empty(), "the READMEs' commands differ:\n{}", problems.join("\n"));
}

/// Every subcommand and flag the READMEs and interfaces.md name exists: `kuper-bridge
/// SUBCOMMAND --help` succeeds and lists the flag.
#[test]
fn documented_commands_and_flags_exist() {
    let bin = env!("CARGO_BIN_EXE_kuper-bridge");
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (doc, text) in [README_EN, README_RU, INTERFACES] {
        let commands = flags_by_subcommand(text);
        assert!(commands.contains_key("serve"), "{doc}: no `kuper-bridge serve` found: {commands:?}");
        for (name, flags) in commands {
            // `orders list|show` is two commands; a flag must be in the help of one of them.
            let (group, rest) = name.split_once(' ').map_or((name.as_str(), None), |(g, r)| (g, Some(r)));
            let alternatives: Vec<String> = match rest {
                Some(rest) => rest.split('|').map(|r| format!("{group} {r}")).collect(),
                None => vec![group.to_string()],
            };
            let mut help = String::new();
            for alternative in &alternatives {
                let text = helps.entry(alternative.clone()).or_insert_with(|| {
                    let out = std::process::Command::new(bin)
                        .args(alternative.split_whitespace())
                        .arg("--help")
                        .output()
                        .expect("the kuper-bridge binary runs");
                    if out.status.success() {
                        String::from_utf8_lossy(&out.stdout).into_owned()
                    } else {
                        String::new()
                    }
                });
                if text.is_empty() {
                    problems.push(format!("{doc}: `kuper-bridge {alternative}` is not a command"));
                }
                help.push_str(text);
            }
            let listed: BTreeSet<&str> = help
                .split(|c: char| c.is_whitespace() || ",=[]<>".contains(c))
                .filter(|t| t.starts_with("--"))
                .collect();
            for flag in &flags {
                if !listed.contains(flag.as_str()) {
                    problems.push(format!("{doc}: `kuper-bridge {name}` has no flag {flag}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "the docs name commands or flags the binary does not have:\n{}", problems.join("\n"));
}

/// The value after `--flag` (or in `--flag=value`).
fn flag_value<'a>(args: &'a str, name: &str) -> Option<&'a str> {
    let tokens: Vec<&str> = args.split_whitespace().collect();
    tokens.iter().enumerate().find_map(|(i, t)| {
        if *t == name {
            tokens.get(i + 1).copied()
        } else {
            t.strip_prefix(name).and_then(|rest| rest.strip_prefix('='))
        }
    })
}

/// `host:port` of `http://host:port/…`.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

/// The READMEs' `sim run --merchant-api` works against the gateway as shipped: the plain
/// `serve` (the sandbox's own fake Kuper holds the port the runner needs) with
/// `kuper-bridge.toml`, whose Kuper is the runner's fake Kuper.
#[test]
fn readme_conformance_run_matches_the_shipped_config() {
    use figment::providers::{Format, Toml};
    let config: kuper_bridge::config::Config =
        figment::Figment::from(Toml::string(SHIPPED_CONFIG)).extract().expect("kuper-bridge.toml parses");
    let gateway = config.server.listen.as_str();
    let fake_kuper = authority(&config.kuper.base_url);
    for (readme, text) in [README_EN, README_RU] {
        let (blocks, _) = code_of(text);
        let mut last_serve: Option<String> = None;
        let mut runs = 0;
        for line in blocks.iter().flat_map(|b| b.lines.iter()) {
            let Some(args) = kuper_bridge_args(line) else { continue };
            let (name, flags) = subcommand_and_flags(args);
            if name == "serve" {
                last_serve = Some(args.to_string());
            }
            if name != "sim run" || !flags.contains("--merchant-api") {
                continue;
            }
            runs += 1;
            let serve = last_serve.as_deref().unwrap_or_else(|| panic!("{readme}: `sim run` before any `serve`"));
            assert!(
                !serve.contains("--sandbox"),
                "{readme}: `sim run --merchant-api` right after `kuper-bridge {serve}`: the sandbox's fake Kuper \
                 holds {fake_kuper}; run the plain `serve` first"
            );
            let value = |f: &str| flag_value(args, f).unwrap_or_else(|| panic!("{readme}: `sim run` without {f}"));
            let target = value("--target");
            assert_eq!(authority(target), gateway, "{readme}: --target is not the gateway of kuper-bridge.toml");
            assert!(target.ends_with(&config.server.webhook_path), "{readme}: --target {target}: not the webhook path");
            assert_eq!(authority(value("--merchant-api")), gateway, "{readme}: --merchant-api");
            assert_eq!(
                value("--listen"),
                fake_kuper,
                "{readme}: the runner's fake Kuper must listen where kuper-bridge.toml's kuper.base_url points"
            );
            let key = value("--api-key");
            assert!(
                config.api_keys.iter().any(|k| k.key == key),
                "{readme}: --api-key {key} is not in kuper-bridge.toml"
            );
        }
        assert!(runs > 0, "{readme}: no `sim run --merchant-api` example");
    }
}

/// The curl lines of a README's `sh` blocks, comments removed, in order.
fn curl_lines(markdown: &str) -> Vec<String> {
    let (blocks, _) = code_of(markdown);
    blocks
        .iter()
        .filter(|b| b.lang == "sh")
        .flat_map(|b| b.lines.iter())
        .map(|l| without_comment(l).split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| l.contains("curl "))
        .collect()
}

/// The shell variables a line uses (`$API`, `${AT}`), not `$(…)`.
fn variables_used(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String =
            rest.trim_start_matches('{').chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
            out.push(name);
        }
    }
    out
}

/// The curl examples are the same in both languages, send bodies as JSON, use only
/// variables defined before them, and compute times from the clock (a fixed date passes and
/// is then refused with 422).
#[test]
fn readme_curl_examples_are_the_same_and_runnable() {
    let en = curl_lines(README_EN.1);
    let ru = curl_lines(README_RU.1);
    assert!(en.len() >= 10, "README.md: only {} curl lines found", en.len());
    let (en_set, ru_set): (BTreeSet<_>, BTreeSet<_>) = (en.iter().collect(), ru.iter().collect());
    let only_en: Vec<_> = en_set.difference(&ru_set).collect();
    let only_ru: Vec<_> = ru_set.difference(&en_set).collect();
    assert!(
        only_en.is_empty() && only_ru.is_empty(),
        "the READMEs' curl examples differ\nonly in README.md:\n{only_en:#?}\nonly in README.ru.md:\n{only_ru:#?}"
    );
    for (readme, text) in [README_EN, README_RU] {
        let (blocks, _) = code_of(text);
        let mut defined: BTreeSet<String> = BTreeSet::new();
        for line in blocks.iter().filter(|b| b.lang == "sh").flat_map(|b| b.lines.iter()) {
            let line = without_comment(line);
            for statement in line.split(';').map(str::trim) {
                if let Some((name, _)) = statement.split_once('=') {
                    if !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    {
                        defined.insert(name.to_string());
                    }
                }
                if let Some(rest) = statement.strip_prefix("for ") {
                    defined.extend(rest.split_whitespace().next().map(str::to_string));
                }
            }
            if !line.contains("curl ") {
                continue;
            }
            for name in variables_used(line) {
                assert!(defined.contains(&name), "{readme}: ${name} is used before it is defined: {line}");
            }
            let sends_body = line.contains(" -d ") || line.contains(" --data");
            let json_type = line.contains("-H \"$JSON\"") || line.contains("content-type: application/json");
            assert!(!sends_body || json_type, "{readme}: a body sent without the JSON content type: {line}");
            let bytes = line.as_bytes();
            let dated = bytes.windows(11).any(|w| {
                w[..4].iter().all(u8::is_ascii_digit)
                    && w[4] == b'-'
                    && w[5..7].iter().all(u8::is_ascii_digit)
                    && w[7] == b'-'
                    && w[8..10].iter().all(u8::is_ascii_digit)
                    && w[10] == b'T'
            });
            assert!(!dated, "{readme}: a fixed date in an example (it will be in the past): {line}");
        }
    }
}

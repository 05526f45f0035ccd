//! What a run found, and its three renderings: a table for humans, JUnit XML for CI, and one
//! Mermaid sequence diagram per scenario.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Who sends a line of the exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    /// The simulator playing Kuper.
    Kuper,
    /// The merchant under test.
    Merchant,
    /// The runner playing the store staff through the merchant's REST API.
    Store,
}

impl Party {
    fn alias(self) -> &'static str {
        match self {
            Party::Kuper => "K",
            Party::Merchant => "M",
            Party::Store => "S",
        }
    }
}

/// One observed request and its answer, or a note (an outage began, a token was revoked).
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeLine {
    /// Since the scenario started; the only part of a line that differs between two runs of a
    /// well-behaved merchant with the same seed.
    pub at: Duration,
    pub from: Party,
    pub to: Party,
    /// `order.created H12345678901`, `POST /api/v1/orders/H…/ready`, `order.in_work`, or the
    /// note's text.
    pub what: String,
    /// `200 accepted`, `422 repeat`, `202`; `None` for notes.
    pub answer: Option<String>,
    /// False when the answer is an error or a refusal.
    pub ok: bool,
    pub note: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioResult {
    pub name: String,
    pub description: String,
    pub passed: bool,
    pub duration: Duration,
    /// Each starts with the rule it names: a validator rule (`repeat`, `totals_mismatch`, …)
    /// or a runner rule (`created_answer`, `missing_notification`, …), then `: ` and details.
    pub failures: Vec<String>,
    pub exchange: Vec<ExchangeLine>,
    /// The `payload` of every `order.created` the scenario sent, in order.
    pub orders: Vec<Value>,
}

impl ScenarioResult {
    /// A result for something that could not run at all.
    pub(crate) fn broken(name: &str, failure: String) -> Self {
        Self {
            name: name.to_owned(),
            description: String::new(),
            passed: false,
            duration: Duration::ZERO,
            failures: vec![failure],
            exchange: Vec::new(),
            orders: Vec::new(),
        }
    }

    /// The rules this scenario's failures name, in order, without repeats.
    pub fn rules(&self) -> Vec<&str> {
        let mut rules = Vec::new();
        for failure in &self.failures {
            let rule = rule_of(failure);
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        rules
    }

    /// The observed exchange as a Mermaid sequence diagram; failures are notes at the end.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("sequenceDiagram\n");
        out.push_str("    participant K as Kuper (simulator)\n");
        out.push_str("    participant M as Merchant under test\n");
        if self.exchange.iter().any(|l| l.from == Party::Store || l.to == Party::Store) {
            out.push_str("    participant S as Store staff (runner, via REST API)\n");
        }
        for line in &self.exchange {
            let (from, to) = (line.from.alias(), line.to.alias());
            if line.note {
                let over = if from == to { from.to_owned() } else { format!("{from},{to}") };
                let _ = writeln!(out, "    Note over {over}: {}", mermaid_text(&line.what));
                continue;
            }
            let _ = writeln!(out, "    {from}->>{to}: {}", mermaid_text(&line.what));
            if let Some(answer) = &line.answer {
                let arrow = if line.ok { "-->>" } else { "--x" };
                let _ = writeln!(out, "    {to}{arrow}{from}: {}", mermaid_text(answer));
            }
        }
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "    Note over K,M: {} {verdict}", mermaid_text(&self.name));
        for failure in &self.failures {
            let _ = writeln!(out, "    Note over K,M: {}", mermaid_text(failure));
        }
        out
    }
}

/// The rule a failure names: the text before its first `:`.
pub(crate) fn rule_of(failure: &str) -> &str {
    failure.split_once(':').map_or(failure, |(rule, _)| rule).trim()
}

/// Mermaid ends a message at a newline and reads `;` and `#` specially.
fn mermaid_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            ';' => ',',
            '#' => '№',
            c if c.is_control() => '·',
            c => c,
        })
        .collect()
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub results: Vec<ScenarioResult>,
}

impl Report {
    /// True when every scenario passed (and at least one ran).
    pub fn passed(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(|r| r.passed)
    }

    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }

    fn total_time(&self) -> Duration {
        self.results.iter().map(|r| r.duration).sum()
    }

    /// A fixed-width table: one row per scenario, every failure on a line of its own.
    pub fn table(&self) -> String {
        let width = self.results.iter().map(|r| r.name.chars().count()).max().unwrap_or(8).max(8);
        let mut out = String::new();
        let _ = writeln!(out, "{:>3}  {:<width$}  {:<6}  {:>8}  failures", "#", "scenario", "result", "time");
        for (index, result) in self.results.iter().enumerate() {
            let verdict = if result.passed { "pass" } else { "FAIL" };
            let time = format!("{:.2} s", result.duration.as_secs_f64());
            let first = result.failures.first().map(String::as_str).unwrap_or("");
            let _ = writeln!(out, "{:>3}  {:<width$}  {verdict:<6}  {time:>8}  {first}", index + 1, result.name);
            for failure in result.failures.iter().skip(1) {
                let _ = writeln!(out, "{:>3}  {:<width$}  {:<6}  {:>8}  {failure}", "", "", "", "");
            }
        }
        let failed = self.failed();
        let _ = writeln!(
            out,
            "{} scenario(s): {} passed, {failed} failed in {:.1} s",
            self.results.len(),
            self.results.len() - failed,
            self.total_time().as_secs_f64()
        );
        out
    }

    /// JUnit XML: one `<testcase>` per scenario; a failing one carries a `<failure>` whose
    /// `message` is its first failure and `type` the rule, with every failure in the text.
    pub fn junit(&self) -> String {
        let tests = self.results.len();
        let failures = self.failed();
        let time = self.total_time().as_secs_f64();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"kuper-bridge conformance\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">"
        );
        let _ = writeln!(
            out,
            "  <testsuite name=\"kuper-bridge conformance\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{time:.3}\">"
        );
        for result in &self.results {
            let _ = write!(
                out,
                "    <testcase classname=\"kuper_bridge.conformance\" name=\"{}\" time=\"{:.3}\">",
                xml_escape(&result.name),
                result.duration.as_secs_f64()
            );
            if let Some(first) = result.failures.first() {
                let _ = write!(
                    out,
                    "\n      <failure message=\"{}\" type=\"{}\">{}</failure>",
                    xml_escape(first),
                    xml_escape(rule_of(first)),
                    xml_escape(&result.failures.join("\n"))
                );
            }
            let transcript: Vec<String> = result.exchange.iter().map(transcript_line).collect();
            if !transcript.is_empty() {
                let _ = write!(out, "\n      <system-out>{}</system-out>", xml_escape(&transcript.join("\n")));
            }
            if !result.failures.is_empty() || !transcript.is_empty() {
                out.push_str("\n    ");
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }

    /// The diagram of the scenario named `scenario`, if it ran.
    pub fn mermaid(&self, scenario: &str) -> Option<String> {
        self.results.iter().find(|r| r.name == scenario).map(ScenarioResult::mermaid)
    }

    /// Writes `<dir>/<scenario>.mmd` for every scenario (creating `dir`); returns the paths.
    pub fn write_diagrams(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::with_capacity(self.results.len());
        for result in &self.results {
            let name: String =
                result.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            let path = dir.join(format!("{name}.mmd"));
            std::fs::write(&path, result.mermaid())?;
            written.push(path);
        }
        Ok(written)
    }
}

fn party_name(party: Party) -> &'static str {
    match party {
        Party::Kuper => "Kuper",
        Party::Merchant => "Merchant",
        Party::Store => "Store",
    }
}

fn transcript_line(line: &ExchangeLine) -> String {
    let at = format!("{:>8.3}s", line.at.as_secs_f64());
    if line.note {
        return format!("{at}  -- {}", line.what);
    }
    let answer = line.answer.as_deref().map(|a| format!("  => {a}")).unwrap_or_default();
    format!("{at}  {} -> {}: {}{answer}", party_name(line.from), party_name(line.to), line.what)
}

/// Escapes the five XML specials and replaces characters XML 1.0 cannot carry at all (control
/// characters such as the GS separator inside marking codes).
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(passed: bool) -> ScenarioResult {
        ScenarioResult {
            name: "a-happy-path".into(),
            description: "A".into(),
            passed,
            duration: Duration::from_millis(420),
            failures: if passed { vec![] } else { vec!["created_answer: status is \"ok\"; <bad> & \u{1d}".into()] },
            exchange: vec![
                ExchangeLine {
                    at: Duration::ZERO,
                    from: Party::Kuper,
                    to: Party::Merchant,
                    what: "order.created H1".into(),
                    answer: Some("200 ok".into()),
                    ok: false,
                    note: false,
                },
                ExchangeLine {
                    at: Duration::from_millis(5),
                    from: Party::Kuper,
                    to: Party::Kuper,
                    what: "outage; 503".into(),
                    answer: None,
                    ok: true,
                    note: true,
                },
            ],
            orders: vec![],
        }
    }

    #[test]
    fn escapes_xml_and_names_rules() {
        assert_eq!(xml_escape("a<b>&\"'\u{1d}"), "a&lt;b&gt;&amp;&quot;&apos;\\x1D");
        assert_eq!(rule_of("repeat: order.assembled was already accepted"), "repeat");
        assert_eq!(sample(false).rules(), ["created_answer"]);
    }

    #[test]
    fn renders_all_three() {
        let report = Report { results: vec![sample(true), sample(false)] };
        assert!(!report.passed());
        let junit = report.junit();
        assert!(
            junit.contains("<failure message=\"created_answer: status is &quot;ok&quot;; &lt;bad&gt; &amp; \\x1D\"")
        );
        assert!(junit.contains("type=\"created_answer\""));
        assert_eq!(junit.matches("<testcase ").count(), 2);
        let mermaid = report.mermaid("a-happy-path").unwrap_or_default();
        assert!(mermaid.starts_with("sequenceDiagram\n"));
        assert!(mermaid.contains("    K->>M: order.created H1\n    M--xK: 200 ok\n"));
        assert!(mermaid.contains("Note over K: outage, 503"));
        assert!(!mermaid.contains("participant S"));
        let table = report.table();
        assert!(table.contains("a-happy-path  FAIL"), "{table}");
        assert!(table.contains("2 scenario(s): 1 passed, 1 failed"), "{table}");
    }
}

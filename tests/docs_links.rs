//! The documents' links resolve (`make check-links`, part of `make test`): every relative link
//! and anchor in the top-level Markdown files and in docs/, and the alerts' runbook annotations,
//! name a file of the repository and a heading in it (anchors as GitHub makes them from headings).
//! Links to other sites are refused: the documents stand on the repository alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files checked: the top-level ones and docs/.
fn documents() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [root(), root().join("docs")] {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines of `text` outside fenced code blocks, with their numbers.
fn prose(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<&str> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| t.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// `line` without its inline code spans.
fn without_code(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let after = &rest[start + ticks..];
        match after.find(&"`".repeat(ticks)) {
            Some(end) => rest = &after[end + ticks..],
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// GitHub's anchor for a heading: its text lower-cased, without punctuation but `-` and `_`,
/// spaces made dashes.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    // [text](target) keeps only its text.
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(close), Some(end)) if close < end => {
                text.push_str(&after[..close]);
                rest = &after[end + 1..];
            }
            _ => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown document: its headings' slugs (repeats numbered as GitHub numbers
/// them) and explicit `<a id=…>` / `<a name=…>`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = slug(line[hashes..].trim().trim_end_matches('#').trim());
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 { base.clone() } else { format!("{base}-{n}") });
            *n += 1;
        }
        for key in ["<a id=\"", "<a name=\""] {
            let mut rest = line;
            while let Some(i) = rest.find(key) {
                let after = &rest[i + key.len()..];
                let end = after.find('"').unwrap_or(after.len());
                out.insert(after[..end].to_string());
                rest = &after[end..];
            }
        }
    }
    out
}

/// The link targets of one line of prose: `[text](target)` and `[label]: target`.
fn targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    let mut out = Vec::new();
    let mut rest = line.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let mut depth = 0;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => return true,
                    ')' => depth -= 1,
                    _ => {}
                }
                false
            })
            .map_or(after.len(), |(j, _)| j);
        let target = after[..end].split_whitespace().next().unwrap_or("");
        out.push(target.trim_start_matches('<').trim_end_matches('>').to_string());
        rest = &after[end..];
    }
    let t = line.trim_start();
    if t.starts_with('[')
        && let Some(i) = t.find("]: ")
    {
        out.push(t[i + 3..].split_whitespace().next().unwrap_or("").to_string());
    }
    out
}

/// `base/relative`, with `.` and `..` resolved.
fn join(base: &Path, relative: &str) -> PathBuf {
    let mut out = base.to_path_buf();
    for part in Path::new(relative).components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What is wrong with `target`, linked from `from`, if anything.
fn check(from: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("an empty link".into());
    }
    if target.contains("://") || target.starts_with("mailto:") {
        return Some(format!("{target}: a link outside the repository"));
    }
    let (path, anchor) = target.split_once('#').map_or((target, None), |(p, a)| (p, Some(a)));
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        join(from.parent().unwrap(), path)
    };
    if !file.starts_with(root()) {
        return Some(format!("{target}: outside the repository"));
    }
    if !file.exists() {
        return Some(format!("{target}: no such file"));
    }
    let anchor = anchor?;
    if file.extension().is_none_or(|e| e != "md") {
        return Some(format!("{target}: an anchor into a file that is not Markdown"));
    }
    let text = fs::read_to_string(&file).unwrap();
    (!anchors(&text).contains(anchor)).then(|| format!("{target}: no heading makes the anchor #{anchor}"))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut problems = Vec::new();
    let mut links = 0;
    for doc in documents() {
        let text = fs::read_to_string(&doc).unwrap();
        for (n, line) in prose(&text) {
            for target in targets(line) {
                links += 1;
                if let Some(p) = check(&doc, &target) {
                    problems.push(format!("{}:{n}: {p}", relative(&doc)));
                }
            }
            let bare = without_code(line);
            if bare.contains("http://") || bare.contains("https://") {
                problems.push(format!(
                    "{}:{n}: an address of another site outside code (the documents stand on the repository alone)",
                    relative(&doc)
                ));
            }
        }
    }
    assert!(links > 20, "only {links} links found: is the parser broken?");
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_alert_runbook_names_a_heading() {
    let mut problems = Vec::new();
    for file in ["monitoring/alerts.yaml", "monitoring/prometheusrule.yaml"] {
        let path = root().join(file);
        let text = fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if let Some(value) = line.trim().strip_prefix("runbook:") {
                // The runbook is relative to the repository's root, as the alert's reader sees it.
                let target = value.trim().trim_matches('"');
                if let Some(p) = check(&root().join("README.md"), target) {
                    problems.push(format!("{file}:{}: {p}", n + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug("Side by side with Kyverno v1.19.1 (`make bench-kyverno`)"),
        "side-by-side-with-kyverno-v1191-make-bench-kyverno"
    );
    assert_eq!(
        slug("Protection: what is prevented, what is reported, what is not"),
        "protection-what-is-prevented-what-is-reported-what-is-not"
    );
    assert_eq!(
        slug("The API: `SecurityBaseline` [x](y.md)"),
        "the-api-securitybaseline-x"
    );
    let a = anchors("# A\n```\n# not a heading\n```\n## A\n<a id=\"here\"></a>\n");
    assert_eq!(a, BTreeSet::from(["a".into(), "a-1".into(), "here".into()]));
    assert_eq!(
        targets("see [x](docs/a.md#b) and `[y](z)` [w](<q.md>)"),
        vec!["docs/a.md#b", "q.md"]
    );
}

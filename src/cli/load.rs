//! Reading YAML documents from files, directories and stdin, each with the location a person
//! can find it by (`file:document`).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One YAML document and where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    pub location: Location,
    pub value: serde_json::Value,
    /// Where its fields are, relative to the document.
    pub positions: crate::cli::positions::Positions,
}

impl Document {
    /// Where `field` is in the file (the document's first line for the whole document).
    pub fn position_of(&self, field: &str) -> crate::cli::positions::Position {
        match self.positions.of_field(field) {
            Some(p) => crate::cli::positions::Position {
                line: self.location.line + p.line - 1,
                column: p.column,
            },
            None => crate::cli::positions::Position {
                line: self.location.line,
                column: 1,
            },
        }
    }
}

/// `file:N` (the N-th document of the file, from 1) and the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub document: usize,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.document)
    }
}

/// A document that is not YAML.
#[derive(Debug, thiserror::Error)]
#[error("{location} (line {}): not valid YAML: {message}", location.line)]
pub struct ParseError {
    pub location: Location,
    pub message: String,
}

/// Reads every document of `paths`: files, directories (their `.yaml`, `.yml` and `.json`
/// files, recursively, in name order) and `-` for stdin. Empty documents are skipped.
pub fn read(paths: &[PathBuf]) -> anyhow::Result<(Vec<Document>, Vec<ParseError>)> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| anyhow::anyhow!("reading stdin: {e}"))?;
            split("-", &text, &mut docs, &mut errors);
            continue;
        }
        for file in files(path)? {
            let text =
                std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            split(&file.display().to_string(), &text, &mut docs, &mut errors);
        }
    }
    Ok((docs, errors))
}

fn files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(files(&entry)?);
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Splits a stream at `---` lines and parses each document on its own, so one bad document
/// does not hide the others and every error names its document.
fn split(file: &str, text: &str, docs: &mut Vec<Document>, errors: &mut Vec<ParseError>) {
    let mut chunks: Vec<(usize, String)> = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        let marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.trim().is_empty() || rest.starts_with(' '));
        if marker {
            chunks.push((i + 2, String::new()));
            continue;
        }
        let chunk = &mut chunks.last_mut().expect("one chunk at least").1;
        chunk.push_str(line);
        chunk.push('\n');
    }
    let mut document = 0;
    for (line, chunk) in chunks {
        let meaningful = chunk
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "...");
        if !meaningful {
            continue;
        }
        document += 1;
        let location = Location {
            file: file.to_string(),
            document,
            line,
        };
        match serde_saphyr::from_str::<serde_json::Value>(&chunk) {
            Ok(serde_json::Value::Null) => {}
            Ok(value) => docs.push(Document {
                location,
                value,
                positions: crate::cli::positions::Positions::of(&chunk).unwrap_or_default(),
            }),
            Err(e) => errors.push(ParseError {
                location,
                message: e.to_string(),
            }),
        }
    }
}

/// Parses documents from a string (tests, and `-` handled above).
pub fn parse_str(file: &str, text: &str) -> (Vec<Document>, Vec<ParseError>) {
    let (mut docs, mut errors) = (Vec::new(), Vec::new());
    split(file, text, &mut docs, &mut errors);
    (docs, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_numbered_from_one_and_empty_ones_skipped() {
        let (docs, errors) = parse_str("f.yaml", "# header\n---\na: 1\n---\n\n---\nb: [2]\n");
        assert!(errors.is_empty());
        let locations: Vec<String> = docs.iter().map(|d| d.location.to_string()).collect();
        assert_eq!(locations, ["f.yaml:1", "f.yaml:2"]);
        assert_eq!(docs[1].value, serde_json::json!({"b": [2]}));
        assert_eq!(docs[1].location.line, 7);
    }

    #[test]
    fn a_bad_document_is_reported_and_the_others_still_read() {
        let (docs, errors) = parse_str("f.yaml", "a: [1\n---\nb: 2\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].location.to_string(), "f.yaml:1");
    }
}

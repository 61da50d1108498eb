//! Where each field of a YAML document is: a tree of line and column positions read alongside
//! the document, so an error about `spec.roleBindings[1].groups[0]` points at that line and
//! column of the file (not merely at the document).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A line and column (both from 1) in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The positions of a document's nodes, relative to the document's text.
#[derive(Clone, Debug, Default)]
pub struct Positions {
    root: Node,
}

#[derive(Clone, Debug, Default)]
enum Node {
    #[default]
    Leaf,
    Map(BTreeMap<String, (Position, Node)>),
    Seq(Vec<(Position, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

fn at<T>(s: &Spanned<T>) -> Position {
    Position {
        line: s.referenced.line() as usize,
        column: s.referenced.column() as usize,
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value: Spanned<Node> = map.next_value()?;
            // A key's own position: where a person looks for the field.
            out.insert(key.value.clone(), (at(&key), value.value));
        }
        Ok(Node::Map(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            out.push((at(&item), item.value));
        }
        Ok(Node::Seq(out))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
}

/// One step of a field path: `name` or `[index]`.
fn steps(field: &str) -> Vec<Result<&str, usize>> {
    let mut out = Vec::new();
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            out.push(Ok(name));
        }
        for index in rest.split('[') {
            if let Ok(i) = index.trim_end_matches(']').parse::<usize>() {
                out.push(Err(i));
            }
        }
    }
    out
}

impl Positions {
    /// The positions of `text` (one YAML document); None when it does not parse.
    pub fn of(text: &str) -> Option<Self> {
        serde_saphyr::from_str::<Node>(text).ok().map(|root| Self { root })
    }

    /// Where `field` (`spec.roleBindings[1].groups[0]`) is, or the nearest of its parents that
    /// is in the document (a missing field is reported where its parent is); None for the
    /// whole document.
    pub fn of_field(&self, field: &str) -> Option<Position> {
        let mut node = &self.root;
        let mut found = None;
        for step in steps(field) {
            let next = match (node, step) {
                (Node::Map(m), Ok(name)) => m.get(name),
                (Node::Seq(s), Err(i)) => s.get(i),
                _ => None,
            };
            let Some((position, child)) = next else { break };
            found = Some(*position);
            node = child;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_path_points_at_its_line_and_column() {
        let text = "apiVersion: v1\nspec:\n  roleBindings:\n    - name: a\n      groups: [x, y]\n    - name: b\n      groups:\n        - z\n";
        let p = Positions::of(text).unwrap();
        let pos = |f: &str| p.of_field(f).map(|p| (p.line, p.column));
        assert_eq!(pos("spec"), Some((2, 1)));
        assert_eq!(pos("spec.roleBindings[1].name"), Some((6, 7)));
        assert_eq!(pos("spec.roleBindings[1].groups[0]"), Some((8, 11)));
        assert_eq!(pos("spec.roleBindings[0].groups[1]"), Some((5, 19)));
        // A missing field: where its parent is.
        assert_eq!(pos("spec.roleBindings[0].clusterRole"), Some((4, 7)));
        assert_eq!(pos(""), None);
    }
}

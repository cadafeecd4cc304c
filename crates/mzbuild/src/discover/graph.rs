//! The image dependency graph: resolving target sets in dependency order
//! and finding cycles. Pure functions over the discovered images.

use std::collections::{BTreeMap, BTreeSet};

use super::Image;

/// The names of `targets` (every image when empty) and all their transitive
/// dependencies, dependencies first, ties broken by name. Every target must
/// exist.
pub fn resolve<'a>(images: &'a BTreeMap<String, Image>, targets: &[String]) -> Vec<&'a str> {
    let mut want = BTreeSet::new();
    let mut stack: Vec<&str> = Vec::new();
    if targets.is_empty() {
        stack.extend(images.keys().map(String::as_str));
    }
    stack.extend(targets.iter().filter_map(|t| images.get_key_value(t)).map(|(k, _)| k.as_str()));
    while let Some(n) = stack.pop() {
        if want.insert(n) {
            stack.extend(images[n].depends_on.iter().map(String::as_str));
        }
    }
    topo_order(images, &want)
}

/// Kahn's algorithm over the `want` subset (closed under dependencies), ready
/// images taken in name order.
fn topo_order<'a>(images: &'a BTreeMap<String, Image>, want: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let mut missing: BTreeMap<&str, usize> = want.iter().map(|n| (*n, images[*n].depends_on.len())).collect();
    let mut ready: BTreeSet<&str> = missing.iter().filter(|(_, c)| **c == 0).map(|(n, _)| *n).collect();
    let mut order = Vec::with_capacity(want.len());
    while let Some(n) = ready.pop_first() {
        order.push(n);
        for other in want {
            if images[*other].depends_on.iter().any(|d| d == n) {
                let c = missing.get_mut(other).unwrap();
                *c -= 1;
                if *c == 0 {
                    ready.insert(other);
                }
            }
        }
    }
    order
}

pub fn find_cycle(images: &BTreeMap<String, Image>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        n: &'a str,
        images: &'a BTreeMap<String, Image>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = stack.iter().position(|s| *s == n).unwrap();
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n, Mark::Visiting);
        stack.push(n);
        for d in &images[n].depends_on {
            if images.contains_key(d) {
                if let Some(c) = visit(d, images, marks, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in images.keys() {
        if let Some(c) = visit(n, images, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

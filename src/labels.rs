//! Alert labels that cost what they must: the labels every alert of a rule carries (`rule`,
//! `source`, `severity`, the rule's own `labels:` …) are one shared list per rule, and an
//! alert holds only its own (`order_id`, `status`, allow-listed columns). Names and repeated
//! values are shared strings ([`intern`]), so 100 000 alerts of one rule do not hold 100 000
//! copies of `"severity" = "critical"`.
//!
//! A plain helper below every layer: the matchers of routes, silences and inhibit rules read
//! labels through [`LabelSet`], whichever form they come in.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

/// A shared string.
pub type Str = Arc<str>;

/// Anything labels can be read from.
pub trait LabelSet {
    /// The value of label `name`, if present.
    fn label(&self, name: &str) -> Option<&str>;
}

impl LabelSet for BTreeMap<String, String> {
    fn label(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl LabelSet for Labels {
    fn label(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

/// Strings that repeat across alerts (label names, statuses, a channel's few values), shared.
/// Bounded: past [`INTERN_LIMIT`] entries a string is allocated on its own, so a label column
/// with a value per order cannot grow the table without end.
pub fn intern(s: &str) -> Str {
    static TABLE: OnceLock<Mutex<HashSet<Str>>> = OnceLock::new();
    let mut table = TABLE
        .get_or_init(Default::default)
        .lock()
        .expect("intern lock");
    if let Some(found) = table.get(s) {
        return found.clone();
    }
    let new: Str = Arc::from(s);
    if table.len() < INTERN_LIMIT {
        table.insert(new.clone());
    }
    new
}

/// How many distinct strings [`intern`] keeps.
pub const INTERN_LIMIT: usize = 10_000;

/// Reads the allow-listed label columns of many rows (one evaluation's): names interned
/// once, and each column's values found among the last few it gave, so the few values such a
/// column repeats (an order type, a channel) cost a comparison, not the shared table's lock.
pub struct LabelColumns {
    names: Vec<Str>,
    recent: Vec<Vec<Str>>,
    /// The columns in label order (by name; of equal names, the last column), by position.
    by_name: Vec<usize>,
    /// The row being read, in label order.
    row: Vec<(Str, Str)>,
}

/// Values of one column remembered by [`LabelColumns`].
const RECENT_VALUES: usize = 8;

impl LabelColumns {
    /// For the columns `names`, in the order the rows give them.
    pub fn new(names: &[String]) -> LabelColumns {
        let mut by_name: Vec<usize> = (0..names.len()).rev().collect();
        by_name.sort_by(|a, b| names[*a].cmp(&names[*b]));
        by_name.dedup_by(|later, first| names[*later] == names[*first]);
        LabelColumns {
            names: names.iter().map(|n| intern(n)).collect(),
            recent: vec![Vec::new(); names.len()],
            by_name,
            row: Vec::with_capacity(names.len()),
        }
    }

    /// The labels of one row whose i-th column gives `value(i)` (NULLs left out).
    pub fn labels<'v>(&mut self, value: impl Fn(usize) -> Option<&'v str>) -> Labels {
        let mut labels = Labels::default();
        self.read_into(&mut labels, value);
        labels
    }

    /// [`LabelColumns::labels`] into `labels`, in place when it holds as many.
    pub fn read_into<'v>(&mut self, labels: &mut Labels, value: impl Fn(usize) -> Option<&'v str>) {
        for &i in &self.by_name {
            let Some(v) = value(i) else { continue };
            let recent = &mut self.recent[i];
            let value = match recent.iter().position(|r| &**r == v) {
                Some(j) => recent[j].clone(),
                None => {
                    let new = intern(v);
                    if recent.len() == RECENT_VALUES {
                        recent.remove(0);
                    }
                    recent.push(new.clone());
                    new
                }
            };
            self.row.push((self.names[i].clone(), value));
        }
        if !labels.shared.is_empty() {
            labels.shared = nothing_shared();
        }
        if labels.own.len() == self.row.len() {
            labels.own.swap_with_slice(&mut self.row);
        } else {
            labels.own = self.row.as_slice().into();
        }
        self.row.clear();
    }
}

/// The labels of one alert: a rule-wide shared list and the alert's own, each sorted by name
/// and disjoint (the alert's own win where both name a label). Also a finding's allow-listed
/// columns (own only): one small allocation, not a map.
pub struct Labels {
    shared: Arc<[(Str, Str)]>,
    own: Box<[(Str, Str)]>,
}

impl Clone for Labels {
    fn clone(&self) -> Labels {
        Labels {
            shared: self.shared.clone(),
            own: self.own.clone(),
        }
    }

    /// In place when the own lists are as long (no allocation).
    fn clone_from(&mut self, source: &Labels) {
        self.shared.clone_from(&source.shared);
        self.own.clone_from(&source.own);
    }
}

/// Sorts by name, the last of equal names winning.
fn sorted(mut v: Vec<(Str, Str)>) -> Vec<(Str, Str)> {
    v.reverse();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.dedup_by(|later, first| later.0 == first.0);
    v
}

/// The empty shared list, allocated once.
fn nothing_shared() -> Arc<[(Str, Str)]> {
    static EMPTY: OnceLock<Arc<[(Str, Str)]>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(Vec::new())).clone()
}

impl Default for Labels {
    fn default() -> Labels {
        Labels {
            shared: nothing_shared(),
            own: Box::default(),
        }
    }
}

impl Labels {
    /// Labels with nothing shared, from `pairs` (later pairs win).
    pub fn own_only(pairs: Vec<(Str, Str)>) -> Labels {
        Labels {
            shared: nothing_shared(),
            own: sorted(pairs).into_boxed_slice(),
        }
    }

    /// A rule-wide list, to share among its alerts (later pairs win over earlier ones).
    pub fn shared_list(pairs: impl IntoIterator<Item = (Str, Str)>) -> Arc<[(Str, Str)]> {
        sorted(pairs.into_iter().collect()).into()
    }

    /// `shared` plus the alert's `own` pairs (later pairs win over earlier ones; any own pair
    /// wins over a shared one of the same name).
    pub fn new(shared: Arc<[(Str, Str)]>, own: Vec<(Str, Str)>) -> Labels {
        Labels {
            shared,
            own: sorted(own).into_boxed_slice(),
        }
    }

    /// Labels with nothing shared (a restored or hand-made alert).
    pub fn from_map(map: &BTreeMap<String, String>) -> Labels {
        Labels {
            shared: nothing_shared(),
            own: map.iter().map(|(k, v)| (intern(k), intern(v))).collect(),
        }
    }

    /// The value of label `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        fn find<'a>(list: &'a [(Str, Str)], name: &str) -> Option<&'a str> {
            list.binary_search_by(|(k, _)| k.as_ref().cmp(name))
                .ok()
                .map(|i| list[i].1.as_ref())
        }
        find(&self.own, name).or_else(|| find(&self.shared, name))
    }

    /// Whether label `name` is present.
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every label, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut own = self.own.iter().peekable();
        let mut shared = self.shared.iter().peekable();
        std::iter::from_fn(move || {
            loop {
                let pick_own = match (own.peek(), shared.peek()) {
                    (None, None) => return None,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some(o), Some(s)) => match o.0.cmp(&s.0) {
                        std::cmp::Ordering::Less => true,
                        std::cmp::Ordering::Greater => false,
                        std::cmp::Ordering::Equal => {
                            // The alert's own value hides the shared one.
                            shared.next();
                            continue;
                        }
                    },
                };
                let (k, v) = if pick_own { own.next() } else { shared.next() }?;
                return Some((k.as_ref(), v.as_ref()));
            }
        })
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.shared.is_empty()
    }

    /// As a map (for templates and places that edit labels).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Sets label `name` (the alert's own from then on).
    pub fn insert(&mut self, name: &str, value: &str) {
        let mut own = std::mem::take(&mut self.own).into_vec();
        own.push((intern(name), Str::from(value)));
        self.own = sorted(own).into_boxed_slice();
    }

    /// The shared part.
    pub fn shared(&self) -> &Arc<[(Str, Str)]> {
        &self.shared
    }

    /// The alert's own part, sorted by name.
    pub fn own(&self) -> &[(Str, Str)] {
        &self.own
    }

    /// Bytes this alert's own labels hold (the shared list is counted once per rule).
    pub fn own_bytes(&self) -> usize {
        self.own.len() * std::mem::size_of::<(Str, Str)>()
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Labels) -> bool {
        (Arc::ptr_eq(&self.shared, &other.shared) && self.own == other.own)
            || self.iter().eq(other.iter())
    }
}

impl Eq for Labels {}

impl std::hash::Hash for Labels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for (k, v) in self.iter() {
            k.hash(state);
            v.hash(state);
        }
    }
}

impl std::fmt::Debug for Labels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Labels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Labels, D::Error> {
        Ok(Labels::from_map(&BTreeMap::deserialize(d)?))
    }
}

impl std::ops::Index<&str> for Labels {
    type Output = str;

    /// The value of label `name`; panics when there is none (as a map's index does).
    fn index(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("no label {name:?}"))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Labels {
        Labels::from_map(&iter.into_iter().collect())
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Labels {
        Labels::from_map(&map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(Str, Str)> {
        v.iter().map(|(k, v)| (intern(k), intern(v))).collect()
    }

    #[test]
    fn label_columns_share_repeated_values_and_leave_nulls_out() {
        let mut columns = LabelColumns::new(&["order_type".into(), "channel".into()]);
        let mut rows = Vec::new();
        // More distinct values than a column remembers, then the first again.
        for i in 0..(RECENT_VALUES + 3) {
            let v = format!("type{i}");
            rows.push(columns.labels(|c| [Some(v.as_str()), None][c]));
        }
        let again = columns.labels(|c| [Some("type0"), Some("web")][c]);
        assert_eq!(again.get("order_type"), Some("type0"));
        assert_eq!(again.get("channel"), Some("web"));
        assert_eq!(rows[0].get("channel"), None, "NULL left out");
        assert_eq!(
            rows[3].iter().collect::<Vec<_>>(),
            [("order_type", "type3")]
        );
        // Own labels sort by name: channel, then order_type.
        assert!(
            Arc::ptr_eq(&rows[0].own()[0].1, &again.own()[1].1),
            "one shared string, found again after it left the recent values"
        );
        let same = columns.labels(|c| [Some("type0"), Some("web")][c]);
        assert!(Arc::ptr_eq(&same.own()[0].1, &again.own()[0].1));
    }

    #[test]
    fn own_labels_hide_shared_ones_and_iteration_is_sorted() {
        let shared = Labels::shared_list(pairs(&[
            ("severity", "critical"),
            ("alertname", "OrderStuck"),
            ("team", "ops"),
        ]));
        let l = Labels::new(
            shared.clone(),
            pairs(&[("order_id", "1"), ("alertname", "StatusMismatch")]),
        );
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            vec![
                ("alertname", "StatusMismatch"),
                ("order_id", "1"),
                ("severity", "critical"),
                ("team", "ops"),
            ]
        );
        assert_eq!(l.get("alertname"), Some("StatusMismatch"));
        assert_eq!(l.get("team"), Some("ops"));
        assert_eq!(l.get("nope"), None);
        assert_eq!(l.len(), 4);
        // Equal as label sets whatever the split.
        assert_eq!(Labels::from_map(&l.to_map()), l);
        assert_ne!(Labels::new(shared, pairs(&[("order_id", "2")])), l);
        assert_eq!(
            serde_json::to_string(&l).unwrap(),
            r#"{"alertname":"StatusMismatch","order_id":"1","severity":"critical","team":"ops"}"#
        );
    }

    #[test]
    fn later_pairs_win() {
        let l = Labels::new(
            Labels::shared_list(pairs(&[("a", "1"), ("a", "2")])),
            pairs(&[("b", "1"), ("b", "3")]),
        );
        assert_eq!(l.get("a"), Some("2"));
        assert_eq!(l.get("b"), Some("3"));
    }
}

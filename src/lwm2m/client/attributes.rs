//! Notification attributes (LWM2M 1.1 §5.1.2): the table Write-Attributes fills, how an
//! observation's effective attributes are found, and when a notification is due.
//!
//! Timers are data: [`NotifyTimer`] holds the last notification's time and value and
//! whether a qualifying change waits; the client asks it for its next deadline and whether
//! it is due at `now`.

use crate::lwm2m::Lwm2mPath;
use crate::transport::NotificationAttributes;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

/// How many paths may carry attributes at once; a Write-Attributes beyond it is refused
/// (4.00) with nothing changed.
pub const MAX_ATTRIBUTE_PATHS: usize = 64;

/// One attribute change from a Write-Attributes query.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum AttributeChange {
    /// `pmin=` (`None`: `pmin` alone, unset).
    Pmin(Option<u32>),
    /// `pmax=`
    Pmax(Option<u32>),
    /// `gt=`
    Gt(Option<f64>),
    /// `lt=`
    Lt(Option<f64>),
    /// `st=`
    St(Option<f64>),
}

/// Why a Write-Attributes query was refused.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum AttributeError {
    /// An attribute name the client does not know (or a duplicate).
    UnknownAttribute(String),
    /// A value that is not a number of the right kind.
    BadValue(String),
    /// gt / lt / st on something other than a numeric resource.
    NotNumeric,
    /// The thresholds in force at `path` would contradict each other: with both `lt` and
    /// `gt` set, `lt` + 2·`st` (`st` 0 when unset) must be below `gt` (LWM2M 1.1 §5.1.2).
    /// `path` is the written path, or a path beneath it whose own thresholds combine with
    /// the inherited ones into such a set.
    Inconsistent {
        /// Where the thresholds in force would contradict each other.
        path: Lwm2mPath,
    },
    /// The minimum period would exceed the maximum period (LWM2M 1.1.1 §5.1.2: pmax must
    /// not be below pmin) at `path`: the written path, or a path beneath it whose own
    /// attributes combine with the inherited ones into such a pair.
    PeriodsInverted {
        /// Where the effective pair would be inverted.
        path: Lwm2mPath,
        /// The effective minimum period there, seconds.
        pmin: u32,
        /// The effective maximum period there, seconds.
        pmax: u32,
    },
    /// The table of paths with attributes is full.
    TableFull,
}

impl fmt::Display for AttributeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributeError::UnknownAttribute(a) => write!(f, "unknown attribute {a:?}"),
            AttributeError::BadValue(a) => write!(f, "bad value for attribute {a:?}"),
            AttributeError::NotNumeric => {
                f.write_str("gt, lt and st apply only to numeric resources")
            }
            AttributeError::Inconsistent { path } => {
                write!(f, "lt + 2 * st must be below gt at {path}")
            }
            AttributeError::PeriodsInverted { path, pmin, pmax } => {
                write!(f, "pmin {pmin} above pmax {pmax} at {path}")
            }
            AttributeError::TableFull => f.write_str("too many paths carry attributes"),
        }
    }
}

impl std::error::Error for AttributeError {}

/// Parses Write-Attributes query items (`pmin=10`, `pmax`, `gt=3.5`, ...). Unknown
/// attributes are refused; `epmin` / `epmax` (LWM2M 1.1) are accepted and ignored.
///
/// ```
/// use twinhub::lwm2m::client::{AttributeChange, parse_attributes};
/// let c = parse_attributes(["pmin=10", "pmax", "gt=2.5"]).unwrap();
/// assert_eq!(c, vec![AttributeChange::Pmin(Some(10)), AttributeChange::Pmax(None), AttributeChange::Gt(Some(2.5))]);
/// ```
pub fn parse_attributes<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<AttributeChange>, AttributeError> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for item in items {
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        if seen.contains(&name) || seen.len() > 8 {
            return Err(AttributeError::UnknownAttribute(
                name.chars().take(16).collect(),
            ));
        }
        seen.push(name);
        let bad = || AttributeError::BadValue(name.to_string());
        let period = |v: Option<&str>| -> Result<Option<u32>, AttributeError> {
            v.map(|v| v.parse::<u32>().map_err(|_| bad())).transpose()
        };
        let number = |v: Option<&str>| -> Result<Option<f64>, AttributeError> {
            v.map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(bad)
            })
            .transpose()
        };
        out.push(match name {
            "pmin" => AttributeChange::Pmin(period(value)?),
            "pmax" => AttributeChange::Pmax(period(value)?),
            "gt" => AttributeChange::Gt(number(value)?),
            "lt" => AttributeChange::Lt(number(value)?),
            "st" => {
                let st = number(value)?;
                if st.is_some_and(|s| s < 0.0) {
                    return Err(bad());
                }
                AttributeChange::St(st)
            }
            "epmin" | "epmax" => continue,
            other => {
                return Err(AttributeError::UnknownAttribute(
                    other.chars().take(16).collect(),
                ));
            }
        });
    }
    Ok(out)
}

/// The attributes attached to paths, bounded by [`MAX_ATTRIBUTE_PATHS`].
#[derive(Clone, Default, Debug)]
pub struct AttributeTable {
    by_path: BTreeMap<Lwm2mPath, NotificationAttributes>,
}

impl AttributeTable {
    /// Applies changes to `path`. All or nothing: the attributes the path would then have
    /// (those set there merged with the changes) are checked first, and a refusal changes
    /// nothing.
    ///
    /// Thresholds are judged as they take effect: the `gt` / `lt` / `st` in force at
    /// `path` and at every path beneath it that carries attributes of its own (each
    /// taken from the deepest of the path, its resource, instance and object that sets it,
    /// as a resource inherits them; an object or instance path is judged by what a
    /// resource beneath it without attributes of its own would inherit) must keep
    /// `lt` + 2·`st` below `gt`, else [`AttributeError::Inconsistent`] naming the first
    /// such path. So `gt=5` on `/3303/0/5700/0` refuses when `/3303/0/5700` has `lt=10`,
    /// and so does the reverse order.
    ///
    /// Periods are judged as they take effect: the pmin / pmax pair in force (what
    /// [`AttributeTable::effective`] gives, inheriting from instance and object) at `path`
    /// and at every path beneath it that carries attributes of its own must keep
    /// pmin ≤ pmax, else [`AttributeError::PeriodsInverted`] and nothing changes. So
    /// `pmin=60` on an object refuses when one of its resources has `pmax=30`. Equal periods
    /// are allowed (as Leshan allows them). The server's default periods (`/1/x/2`, `/1/x/3`)
    /// are not part of the check: they belong to another object and change on their own,
    /// and a notification timer whose pmax is below its pmin ignores pmax
    /// ([`NotifyTimer::deadline`]).
    pub fn apply(
        &mut self,
        path: Lwm2mPath,
        changes: &[AttributeChange],
    ) -> Result<(), AttributeError> {
        if !self.by_path.contains_key(&path) && self.by_path.len() >= MAX_ATTRIBUTE_PATHS {
            return Err(AttributeError::TableFull);
        }
        let mut a = self.by_path.get(&path).copied().unwrap_or_default();
        for c in changes {
            match *c {
                AttributeChange::Pmin(v) => a.pmin = v,
                AttributeChange::Pmax(v) => a.pmax = v,
                AttributeChange::Gt(v) => a.gt = v,
                AttributeChange::Lt(v) => a.lt = v,
                AttributeChange::St(v) => a.st = v,
            }
        }
        let before = self.by_path.get(&path).copied();
        self.set(path, a);
        // The sets that can change: at `path` and beneath it (a path without entries of
        // its own has the set of its nearest ancestor that has some).
        let affected = std::iter::once(path).chain(
            self.by_path
                .keys()
                .filter(|p| **p != path && path.contains(p))
                .copied(),
        );
        let refused = affected.clone().find_map(|p| {
            let t = self.inherited(&p);
            match (t.lt, t.gt) {
                (Some(lt), Some(gt)) if lt + 2.0 * t.st.unwrap_or(0.0) >= gt => {
                    Some(AttributeError::Inconsistent { path: p })
                }
                _ => None,
            }
        });
        let refused = refused.or_else(|| {
            affected
                .clone()
                .find_map(|p| match self.effective(&p, None, None) {
                    NotificationAttributes {
                        pmin: Some(pmin),
                        pmax: Some(pmax),
                        ..
                    } if pmin > pmax => Some(AttributeError::PeriodsInverted {
                        path: p,
                        pmin,
                        pmax,
                    }),
                    _ => None,
                })
        });
        if let Some(e) = refused {
            self.set(path, before.unwrap_or_default());
            return Err(e);
        }
        Ok(())
    }

    /// Every attribute as a resource at or beneath `path` with no attributes of its own
    /// below `path` inherits it: each from the deepest of `path` and its ancestors that
    /// sets it, thresholds included whatever the depth (no server defaults).
    fn inherited(&self, path: &Lwm2mPath) -> NotificationAttributes {
        let mut out = NotificationAttributes::default();
        let mut p = Some(*path);
        while let Some(q) = p {
            if q.depth() == 0 {
                break;
            }
            if let Some(a) = self.by_path.get(&q) {
                out.pmin = out.pmin.or(a.pmin);
                out.pmax = out.pmax.or(a.pmax);
                out.gt = out.gt.or(a.gt);
                out.lt = out.lt.or(a.lt);
                out.st = out.st.or(a.st);
            }
            p = q.parent();
        }
        out
    }

    fn set(&mut self, path: Lwm2mPath, a: NotificationAttributes) {
        if a == NotificationAttributes::default() {
            self.by_path.remove(&path);
        } else {
            self.by_path.insert(path, a);
        }
    }

    /// The attributes set at exactly `path`.
    pub fn at(&self, path: &Lwm2mPath) -> Option<&NotificationAttributes> {
        self.by_path.get(path)
    }

    /// The attributes in force at `path`: each attribute from the deepest of path, its
    /// instance, its object that sets it; pmin / pmax fall back to the server defaults.
    /// gt / lt / st are only inherited at resource level.
    pub fn effective(
        &self,
        path: &Lwm2mPath,
        default_pmin: Option<u32>,
        default_pmax: Option<u32>,
    ) -> NotificationAttributes {
        let mut out = NotificationAttributes {
            pmin: default_pmin,
            pmax: default_pmax,
            ..Default::default()
        };
        let mut chain = Vec::with_capacity(4);
        let mut p = Some(*path);
        while let Some(q) = p {
            if q.depth() == 0 {
                break;
            }
            chain.push(q);
            p = q.parent();
        }
        for q in chain.iter().rev() {
            if let Some(a) = self.by_path.get(q) {
                out.pmin = a.pmin.or(out.pmin);
                out.pmax = a.pmax.or(out.pmax);
                if path.depth() >= 3 {
                    out.gt = a.gt.or(out.gt);
                    out.lt = a.lt.or(out.lt);
                    out.st = a.st.or(out.st);
                }
            }
        }
        out
    }

    /// Drops every attribute at or under `path` (after a Delete).
    pub fn remove_under(&mut self, path: &Lwm2mPath) {
        self.by_path.retain(|p, _| !path.contains(p));
    }

    /// Number of paths with attributes.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether no path has attributes.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

/// When one observation notifies: the last notification's time and numeric value, and
/// whether a qualifying change is waiting for pmin to pass.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct NotifyTimer {
    /// When the last notification (or the observe response) went out.
    pub last_sent: Instant,
    /// The numeric value it carried, for gt / lt / st.
    pub last_value: Option<f64>,
    /// A change passed the attribute filters and waits to be sent.
    pub pending: bool,
}

impl NotifyTimer {
    /// A timer started by the observe response at `now` carrying `value`.
    pub fn new(now: Instant, value: Option<f64>) -> Self {
        NotifyTimer {
            last_sent: now,
            last_value: value,
            pending: false,
        }
    }

    /// Records a change to `value` (numeric, when the observed target is one numeric
    /// resource); it becomes pending when it passes gt / lt / st (any change passes when
    /// none is set or the value is not numeric).
    pub fn changed(&mut self, attrs: &NotificationAttributes, value: Option<f64>) {
        if self.pending {
            return;
        }
        let filters = attrs.gt.is_some() || attrs.lt.is_some() || attrs.st.is_some();
        let qualifies = match (value, self.last_value) {
            (Some(new), Some(old)) if filters => {
                let crossed = |t: f64| (old > t) != (new > t) || (old < t) != (new < t);
                attrs.gt.is_some_and(crossed)
                    || attrs.lt.is_some_and(crossed)
                    || attrs.st.is_some_and(|st| (new - old).abs() >= st)
            }
            (Some(_), None) => true,
            _ => true,
        };
        if qualifies {
            self.pending = true;
        }
    }

    /// The next time this observation may need a notification.
    pub fn deadline(&self, attrs: &NotificationAttributes) -> Option<Instant> {
        let pmin = Duration::from_secs(attrs.pmin.unwrap_or(0) as u64);
        let pending = self.pending.then(|| self.last_sent + pmin);
        let pmax = attrs
            .pmax
            .filter(|&p| p > 0 && p >= attrs.pmin.unwrap_or(0))
            .map(|p| self.last_sent + Duration::from_secs(p as u64));
        match (pending, pmax) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a notification is due at `now`.
    pub fn due(&self, now: Instant, attrs: &NotificationAttributes) -> bool {
        self.deadline(attrs).is_some_and(|d| d <= now)
    }

    /// Records a notification sent at `now` carrying `value`.
    pub fn sent(&mut self, now: Instant, value: Option<f64>) {
        self.last_sent = now;
        self.last_value = value;
        self.pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pmin: Option<u32>, pmax: Option<u32>) -> NotificationAttributes {
        NotificationAttributes {
            pmin,
            pmax,
            ..Default::default()
        }
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert!(matches!(
            parse_attributes(["pmin=x"]),
            Err(AttributeError::BadValue(_))
        ));
        assert!(matches!(
            parse_attributes(["gt=inf"]),
            Err(AttributeError::BadValue(_))
        ));
        assert!(matches!(
            parse_attributes(["st=-1"]),
            Err(AttributeError::BadValue(_))
        ));
        assert!(matches!(
            parse_attributes(["foo=1"]),
            Err(AttributeError::UnknownAttribute(_))
        ));
        assert!(matches!(
            parse_attributes(["pmin=1", "pmin=2"]),
            Err(AttributeError::UnknownAttribute(_))
        ));
        assert_eq!(parse_attributes(["epmin=3"]), Ok(vec![]));
    }

    #[test]
    fn effective_inherits_and_overrides() {
        let mut t = AttributeTable::default();
        let r = Lwm2mPath::resource(3, 0, 9);
        t.apply(
            Lwm2mPath::object(3),
            &[
                AttributeChange::Pmin(Some(5)),
                AttributeChange::Gt(Some(1.0)),
            ],
        )
        .unwrap();
        t.apply(
            Lwm2mPath::instance(3, 0),
            &[AttributeChange::Pmax(Some(60))],
        )
        .unwrap();
        t.apply(r, &[AttributeChange::Pmin(Some(7))]).unwrap();
        let e = t.effective(&r, Some(1), Some(300));
        assert_eq!((e.pmin, e.pmax, e.gt), (Some(7), Some(60), Some(1.0)));
        let i = t.effective(&Lwm2mPath::instance(3, 0), Some(1), Some(300));
        assert_eq!((i.pmin, i.pmax, i.gt), (Some(5), Some(60), None));
        let other = t.effective(&Lwm2mPath::resource(4, 0, 0), Some(1), None);
        assert_eq!((other.pmin, other.pmax), (Some(1), None));
        // Unsetting everything removes the entry.
        t.apply(r, &[AttributeChange::Pmin(None)]).unwrap();
        assert!(t.at(&r).is_none());
        t.remove_under(&Lwm2mPath::object(3));
        assert!(t.is_empty());
    }

    #[test]
    fn inconsistent_thresholds_change_nothing() {
        let mut t = AttributeTable::default();
        let r = Lwm2mPath::resource(3303, 0, 5700);
        t.apply(r, &[AttributeChange::Gt(Some(10.0))]).unwrap();
        assert_eq!(
            t.apply(
                r,
                &[
                    AttributeChange::Pmin(Some(5)),
                    AttributeChange::Lt(Some(10.0))
                ]
            ),
            Err(AttributeError::Inconsistent { path: r })
        );
        assert_eq!((t.at(&r).unwrap().pmin, t.at(&r).unwrap().lt), (None, None));
        // lt + 2 st: 4 + 2 * 2 = 8 is below 10; with st 3, 10 is not.
        t.apply(
            r,
            &[
                AttributeChange::Lt(Some(4.0)),
                AttributeChange::St(Some(2.0)),
            ],
        )
        .unwrap();
        assert_eq!(
            t.apply(r, &[AttributeChange::St(Some(3.0))]),
            Err(AttributeError::Inconsistent { path: r })
        );
        assert_eq!(t.at(&r).unwrap().st, Some(2.0));
    }

    /// Checks: thresholds are judged on the set in force at the written path and beneath
    /// it, inheriting as a resource (instance) does.
    /// Before the fix: only the written path's own gt / lt / st were compared, so `gt=5`
    /// on a resource instance under a resource with `lt=10` (and the reverse order, and
    /// a `gt` on the object above a resource with `lt` / `st`) was stored, leaving a
    /// notification band that no value can leave.
    #[test]
    fn inherited_thresholds_are_judged_where_they_take_effect() {
        let mut t = AttributeTable::default();
        let o = Lwm2mPath::object(3303);
        let i = Lwm2mPath::instance(3303, 0);
        let r = Lwm2mPath::resource(3303, 0, 5700);
        let ri = Lwm2mPath::resource_instance(3303, 0, 5700, 0);
        // From below: gt on the resource instance under the resource's lt.
        t.apply(r, &[AttributeChange::Lt(Some(10.0))]).unwrap();
        assert_eq!(
            t.apply(ri, &[AttributeChange::Gt(Some(5.0))]),
            Err(AttributeError::Inconsistent { path: ri })
        );
        assert!(t.at(&ri).is_none(), "the refused write left nothing behind");
        // From above: the resource's lt under the resource instance's gt.
        t.apply(r, &[AttributeChange::Lt(None)]).unwrap();
        t.apply(ri, &[AttributeChange::Gt(Some(5.0))]).unwrap();
        assert_eq!(
            t.apply(r, &[AttributeChange::Lt(Some(10.0))]),
            Err(AttributeError::Inconsistent { path: ri })
        );
        assert!(t.at(&r).is_none());
        // st counts where it is inherited: lt 1 + 2 * st 2 = 5 is not below gt 5.
        t.apply(r, &[AttributeChange::Lt(Some(1.0))]).unwrap();
        assert_eq!(
            t.apply(o, &[AttributeChange::St(Some(2.0))]),
            Err(AttributeError::Inconsistent { path: ri })
        );
        assert!(t.at(&o).is_none());
        t.apply(o, &[AttributeChange::St(Some(1.5))]).unwrap();
        // A resource's own st hides the object's.
        t.apply(r, &[AttributeChange::St(Some(0.5))]).unwrap();
        t.apply(o, &[AttributeChange::St(Some(9.0))]).unwrap();
        let e = t.effective(&ri, None, None);
        assert_eq!((e.gt, e.lt, e.st), (Some(5.0), Some(1.0), Some(0.5)));
        // An instance's thresholds with the object's gt: what every resource beneath
        // without its own would inherit (gt 10, lt 9, st 1) is inconsistent.
        let mut t = AttributeTable::default();
        t.apply(o, &[AttributeChange::Gt(Some(10.0))]).unwrap();
        assert_eq!(
            t.apply(
                i,
                &[
                    AttributeChange::Lt(Some(9.0)),
                    AttributeChange::St(Some(1.0))
                ]
            ),
            Err(AttributeError::Inconsistent { path: i })
        );
        assert!(t.at(&i).is_none());
        t.apply(i, &[AttributeChange::Lt(Some(7.0))]).unwrap();
        // Unsetting a deeper gt lets the inherited one take over, and is judged too.
        let mut t = AttributeTable::default();
        t.apply(o, &[AttributeChange::Gt(Some(3.0))]).unwrap();
        t.apply(
            r,
            &[
                AttributeChange::Gt(Some(20.0)),
                AttributeChange::Lt(Some(5.0)),
            ],
        )
        .unwrap();
        assert_eq!(
            t.apply(r, &[AttributeChange::Gt(None)]),
            Err(AttributeError::Inconsistent { path: r })
        );
        assert_eq!(t.at(&r).unwrap().gt, Some(20.0));
    }

    #[test]
    fn inverted_periods_change_nothing() {
        let mut t = AttributeTable::default();
        let o = Lwm2mPath::object(3303);
        let i = Lwm2mPath::instance(3303, 0);
        let r = Lwm2mPath::resource(3303, 0, 5700);
        // In one request.
        assert_eq!(
            t.apply(
                r,
                &[
                    AttributeChange::Pmin(Some(60)),
                    AttributeChange::Pmax(Some(30))
                ]
            ),
            Err(AttributeError::PeriodsInverted {
                path: r,
                pmin: 60,
                pmax: 30
            })
        );
        assert!(t.is_empty());
        // Equal periods are fine.
        t.apply(
            r,
            &[
                AttributeChange::Pmin(Some(30)),
                AttributeChange::Pmax(Some(30)),
            ],
        )
        .unwrap();
        // Across requests at one path.
        assert!(matches!(
            t.apply(r, &[AttributeChange::Pmin(Some(31))]),
            Err(AttributeError::PeriodsInverted { .. })
        ));
        assert_eq!(t.at(&r).unwrap().pmin, Some(30));
        // Inherited: pmax 10 on the instance, pmin 20 on the resource below it; the
        // resource's own pmax no longer hides the instance's once unset.
        t.apply(r, &[AttributeChange::Pmax(None)]).unwrap();
        assert!(matches!(
            t.apply(i, &[AttributeChange::Pmax(Some(10))]),
            Err(AttributeError::PeriodsInverted { path, pmin: 30, pmax: 10 }) if path == r
        ));
        assert!(t.at(&i).is_none(), "the refused write left nothing behind");
        t.apply(i, &[AttributeChange::Pmax(Some(100))]).unwrap();
        // From above: pmin on the object above the instance's pmax.
        assert!(matches!(
            t.apply(o, &[AttributeChange::Pmin(Some(101))]),
            Err(AttributeError::PeriodsInverted { .. })
        ));
        assert!(t.at(&o).is_none());
        // A deeper pmin overrides the object's, so the object's own pair may be anything
        // the paths beneath do not inherit inverted.
        t.apply(o, &[AttributeChange::Pmin(Some(50))]).unwrap();
        let e = t.effective(&r, Some(1), Some(300));
        assert_eq!((e.pmin, e.pmax), (Some(30), Some(100)));
        // The object's own pair counts too: pmax 20 under its pmin 50.
        assert!(matches!(
            t.apply(o, &[AttributeChange::Pmax(Some(20))]),
            Err(AttributeError::PeriodsInverted { path, .. }) if path == o
        ));
        t.apply(i, &[AttributeChange::Pmax(None)]).unwrap();
        assert_eq!(t.effective(&r, None, None).pmax, None);
    }

    #[test]
    fn table_is_bounded() {
        let mut t = AttributeTable::default();
        for i in 0..MAX_ATTRIBUTE_PATHS as u16 {
            t.apply(Lwm2mPath::object(i), &[AttributeChange::Pmin(Some(1))])
                .unwrap();
        }
        assert_eq!(
            t.apply(Lwm2mPath::object(9999), &[AttributeChange::Pmin(Some(1))]),
            Err(AttributeError::TableFull)
        );
        // Changing an existing entry still works.
        t.apply(Lwm2mPath::object(0), &[AttributeChange::Pmax(Some(9))])
            .unwrap();
    }

    #[test]
    fn pmin_delays_and_pmax_forces() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let a = attrs(Some(10), Some(60));
        let mut n = NotifyTimer::new(t0, Some(1.0));
        assert_eq!(n.deadline(&a), Some(t0 + s(60)));
        n.changed(&a, Some(2.0));
        assert_eq!(n.deadline(&a), Some(t0 + s(10)));
        assert!(!n.due(t0 + s(9), &a));
        assert!(n.due(t0 + s(10), &a));
        n.sent(t0 + s(12), Some(2.0));
        assert_eq!(n.deadline(&a), Some(t0 + s(72)));
        // pmax < pmin: pmax is ignored.
        let b = attrs(Some(10), Some(5));
        assert_eq!(NotifyTimer::new(t0, None).deadline(&b), None);
    }

    #[test]
    fn thresholds_and_step_filter_changes() {
        let t0 = Instant::now();
        let a = NotificationAttributes {
            gt: Some(50.0),
            lt: Some(10.0),
            st: Some(5.0),
            ..Default::default()
        };
        let mut n = NotifyTimer::new(t0, Some(30.0));
        n.changed(&a, Some(33.0));
        assert!(!n.pending, "small step inside the band");
        n.changed(&a, Some(35.0));
        assert!(n.pending, "step of 5");
        n.sent(t0, Some(48.0));
        n.changed(&a, Some(51.0));
        assert!(n.pending, "crossed gt");
        n.sent(t0, Some(12.0));
        n.changed(&a, Some(9.0));
        assert!(n.pending, "crossed lt");
        // Without filters any change is pending.
        let mut m = NotifyTimer::new(t0, Some(1.0));
        m.changed(&NotificationAttributes::default(), Some(1.0));
        assert!(m.pending);
    }
}

//! The parent and child job state machines, as explicit transition tables.
//!
//! Every state change in the engine goes through [`ChildState::next`] or
//! [`ParentState::next`], which look the (state, event) pair up in [`CHILD_TRANSITIONS`] or
//! [`PARENT_TRANSITIONS`]. A pair that is not in the table is not a transition: the engine
//! treats it as "ignore" (e.g. a late device answer for a cancelled child), so no child
//! ever leaves a terminal state.
//!
//! Child jobs:
//!
//! | from | event | to |
//! |---|---|---|
//! | Pending | Start | InProgress |
//! | Pending | StartOffline | WaitingForDevice |
//! | Pending | Fail | Failed |
//! | Pending | Cancel | Cancelled |
//! | WaitingForDevice | DeviceOnline | InProgress |
//! | WaitingForDevice | Retry | RetryWait |
//! | WaitingForDevice | Fail | Failed |
//! | WaitingForDevice | Cancel | Cancelled |
//! | InProgress | DeviceOffline | WaitingForDevice |
//! | InProgress | Succeed | Succeeded |
//! | InProgress | Retry | RetryWait |
//! | InProgress | Fail | Failed |
//! | InProgress | Cancel | Cancelled |
//! | RetryWait | RetryDue | InProgress |
//! | RetryWait | RetryDueOffline | WaitingForDevice |
//! | RetryWait | Fail | Failed |
//! | RetryWait | Cancel | Cancelled |
//!
//! Parent jobs:
//!
//! | from | event | to |
//! |---|---|---|
//! | Scheduled | Start | Running |
//! | Scheduled | Cancel | Cancelled |
//! | Running | AllSucceeded | Completed |
//! | Running | SomeFailed | Failed |
//! | Running | Abort | Failed |
//! | Running | Expire | Failed |
//! | Running | Cancel | Cancelled |
//! | Running | CancelGraceful | Cancelling |
//! | Cancelling | Drained | Cancelled |
//! | Cancelling | Cancel | Cancelled |
//! | Cancelling | Expire | Cancelled |

use std::fmt;

/// The preview's job status values (`status` in a JobResponse).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum JobStatus {
    /// Created, not started (scheduled for later, or a child not yet started).
    Enqueued,
    /// In progress.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with failures (a child: failed; a parent: at least one child failed, or the
    /// job was aborted or ran out of time).
    Failed,
    /// Cancelled.
    Cancelled,
}

impl JobStatus {
    /// Every status, in order.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Enqueued,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The wire string: `enqueued`, `running`, `completed`, `failed`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Enqueued => "enqueued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the status is final.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for JobStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Where one child job is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum ChildState {
    /// Not started yet (rollout limits, scheduled start, or the device is busy with another
    /// job's child).
    Pending,
    /// Started, but the device is offline; resumes when it registers.
    WaitingForDevice,
    /// Operations are running on the device.
    InProgress,
    /// An attempt failed; the next starts after a backoff.
    RetryWait,
    /// Done: succeeded.
    Succeeded,
    /// Done: failed (the child holds the reason).
    Failed,
    /// Done: cancelled (job cancelled or aborted before the child finished).
    Cancelled,
}

impl ChildState {
    /// Every state, in order.
    pub const ALL: [ChildState; 7] = [
        ChildState::Pending,
        ChildState::WaitingForDevice,
        ChildState::InProgress,
        ChildState::RetryWait,
        ChildState::Succeeded,
        ChildState::Failed,
        ChildState::Cancelled,
    ];

    /// The preview status this state shows as.
    pub fn status(self) -> JobStatus {
        match self {
            ChildState::Pending => JobStatus::Enqueued,
            ChildState::WaitingForDevice | ChildState::InProgress | ChildState::RetryWait => {
                JobStatus::Running
            }
            ChildState::Succeeded => JobStatus::Completed,
            ChildState::Failed => JobStatus::Failed,
            ChildState::Cancelled => JobStatus::Cancelled,
        }
    }

    /// Whether the state is final.
    pub fn is_terminal(self) -> bool {
        self.status().is_terminal()
    }

    /// The state after `event`, or `None` when the table has no such edge.
    pub fn next(self, event: ChildEvent) -> Option<ChildState> {
        CHILD_TRANSITIONS
            .iter()
            .find(|(from, ev, _)| *from == self && *ev == event)
            .map(|(_, _, to)| *to)
    }

    /// The index of the edge `(self, event)` in [`CHILD_TRANSITIONS`].
    pub(crate) fn edge(self, event: ChildEvent) -> Option<(usize, ChildState)> {
        CHILD_TRANSITIONS
            .iter()
            .position(|(from, ev, _)| *from == self && *ev == event)
            .map(|i| (i, CHILD_TRANSITIONS[i].2))
    }
}

/// What can happen to a child job.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ChildEvent {
    /// The rollout admits it and its device is (believed) online.
    Start,
    /// The rollout admits it but its device is offline.
    StartOffline,
    /// Its device registered again.
    DeviceOnline,
    /// Its device de-registered, expired or answered "not registered".
    DeviceOffline,
    /// The job's operations completed.
    Succeed,
    /// The attempt failed and a retry rule allows another.
    Retry,
    /// The backoff ran out; the device is online.
    RetryDue,
    /// The backoff ran out; the device is offline.
    RetryDueOffline,
    /// The attempt failed for good (or the job ran out of time, or the device's twin was
    /// removed: the one failure a child that never started can have).
    Fail,
    /// The job was cancelled or aborted.
    Cancel,
}

impl ChildEvent {
    /// Every event.
    pub const ALL: [ChildEvent; 10] = [
        ChildEvent::Start,
        ChildEvent::StartOffline,
        ChildEvent::DeviceOnline,
        ChildEvent::DeviceOffline,
        ChildEvent::Succeed,
        ChildEvent::Retry,
        ChildEvent::RetryDue,
        ChildEvent::RetryDueOffline,
        ChildEvent::Fail,
        ChildEvent::Cancel,
    ];
}

/// The child transition table: (from, event, to). See the module docs.
pub const CHILD_TRANSITIONS: &[(ChildState, ChildEvent, ChildState)] = {
    use ChildEvent as E;
    use ChildState as S;
    &[
        (S::Pending, E::Start, S::InProgress),
        (S::Pending, E::StartOffline, S::WaitingForDevice),
        (S::Pending, E::Fail, S::Failed),
        (S::Pending, E::Cancel, S::Cancelled),
        (S::WaitingForDevice, E::DeviceOnline, S::InProgress),
        (S::WaitingForDevice, E::Retry, S::RetryWait),
        (S::WaitingForDevice, E::Fail, S::Failed),
        (S::WaitingForDevice, E::Cancel, S::Cancelled),
        (S::InProgress, E::DeviceOffline, S::WaitingForDevice),
        (S::InProgress, E::Succeed, S::Succeeded),
        (S::InProgress, E::Retry, S::RetryWait),
        (S::InProgress, E::Fail, S::Failed),
        (S::InProgress, E::Cancel, S::Cancelled),
        (S::RetryWait, E::RetryDue, S::InProgress),
        (S::RetryWait, E::RetryDueOffline, S::WaitingForDevice),
        (S::RetryWait, E::Fail, S::Failed),
        (S::RetryWait, E::Cancel, S::Cancelled),
    ]
};

/// Where a parent job is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum ParentState {
    /// Created; waits for its start time.
    Scheduled,
    /// Starting and driving children.
    Running,
    /// Cancelled gracefully: children in progress finish, nothing new starts.
    Cancelling,
    /// Every child succeeded (but those whose device was removed meanwhile).
    Completed,
    /// Some child failed (other than for its device's removal), or an abort rule
    /// tripped, or the job ran out of time.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl ParentState {
    /// Every state, in order.
    pub const ALL: [ParentState; 6] = [
        ParentState::Scheduled,
        ParentState::Running,
        ParentState::Cancelling,
        ParentState::Completed,
        ParentState::Failed,
        ParentState::Cancelled,
    ];

    /// The preview status this state shows as.
    pub fn status(self) -> JobStatus {
        match self {
            ParentState::Scheduled => JobStatus::Enqueued,
            ParentState::Running | ParentState::Cancelling => JobStatus::Running,
            ParentState::Completed => JobStatus::Completed,
            ParentState::Failed => JobStatus::Failed,
            ParentState::Cancelled => JobStatus::Cancelled,
        }
    }

    /// Whether the state is final.
    pub fn is_terminal(self) -> bool {
        self.status().is_terminal()
    }

    /// The state after `event`, or `None` when the table has no such edge.
    pub fn next(self, event: ParentEvent) -> Option<ParentState> {
        PARENT_TRANSITIONS
            .iter()
            .find(|(from, ev, _)| *from == self && *ev == event)
            .map(|(_, _, to)| *to)
    }
}

/// What can happen to a parent job.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ParentEvent {
    /// Its start time came.
    Start,
    /// Every child finished and all succeeded (but those whose device was removed).
    AllSucceeded,
    /// Every child finished and at least one failed (other than for its device's
    /// removal) or was cancelled.
    SomeFailed,
    /// An abort rule tripped.
    Abort,
    /// The maximum execution time ran out.
    Expire,
    /// Cancelled, abandoning children in progress.
    Cancel,
    /// Cancelled, letting children in progress finish.
    CancelGraceful,
    /// After a graceful cancel, the last child in progress finished.
    Drained,
}

impl ParentEvent {
    /// Every event.
    pub const ALL: [ParentEvent; 8] = [
        ParentEvent::Start,
        ParentEvent::AllSucceeded,
        ParentEvent::SomeFailed,
        ParentEvent::Abort,
        ParentEvent::Expire,
        ParentEvent::Cancel,
        ParentEvent::CancelGraceful,
        ParentEvent::Drained,
    ];
}

/// The parent transition table: (from, event, to). See the module docs.
pub const PARENT_TRANSITIONS: &[(ParentState, ParentEvent, ParentState)] = {
    use ParentEvent as E;
    use ParentState as S;
    &[
        (S::Scheduled, E::Start, S::Running),
        (S::Scheduled, E::Cancel, S::Cancelled),
        (S::Running, E::AllSucceeded, S::Completed),
        (S::Running, E::SomeFailed, S::Failed),
        (S::Running, E::Abort, S::Failed),
        (S::Running, E::Expire, S::Failed),
        (S::Running, E::Cancel, S::Cancelled),
        (S::Running, E::CancelGraceful, S::Cancelling),
        (S::Cancelling, E::Drained, S::Cancelled),
        (S::Cancelling, E::Cancel, S::Cancelled),
        (S::Cancelling, E::Expire, S::Cancelled),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_child_edge_and_only_those() {
        use ChildEvent as E;
        use ChildState as S;
        // The table written out again, by hand, edge by edge.
        let expected = [
            (S::Pending, E::Start, S::InProgress),
            (S::Pending, E::StartOffline, S::WaitingForDevice),
            (S::Pending, E::Fail, S::Failed),
            (S::Pending, E::Cancel, S::Cancelled),
            (S::WaitingForDevice, E::DeviceOnline, S::InProgress),
            (S::WaitingForDevice, E::Retry, S::RetryWait),
            (S::WaitingForDevice, E::Fail, S::Failed),
            (S::WaitingForDevice, E::Cancel, S::Cancelled),
            (S::InProgress, E::DeviceOffline, S::WaitingForDevice),
            (S::InProgress, E::Succeed, S::Succeeded),
            (S::InProgress, E::Retry, S::RetryWait),
            (S::InProgress, E::Fail, S::Failed),
            (S::InProgress, E::Cancel, S::Cancelled),
            (S::RetryWait, E::RetryDue, S::InProgress),
            (S::RetryWait, E::RetryDueOffline, S::WaitingForDevice),
            (S::RetryWait, E::Fail, S::Failed),
            (S::RetryWait, E::Cancel, S::Cancelled),
        ];
        for (from, ev, to) in expected {
            assert_eq!(from.next(ev), Some(to), "{from:?} --{ev:?}-->");
        }
        let mut edges = 0;
        for from in ChildState::ALL {
            for ev in ChildEvent::ALL {
                match from.next(ev) {
                    Some(to) => {
                        edges += 1;
                        assert!(expected.contains(&(from, ev, to)));
                        assert!(!from.is_terminal(), "terminal {from:?} has an edge");
                    }
                    None => assert!(!expected.iter().any(|(f, e, _)| (*f, *e) == (from, ev))),
                }
            }
        }
        assert_eq!(edges, expected.len());
        assert_eq!(CHILD_TRANSITIONS.len(), expected.len());
    }

    #[test]
    fn every_parent_edge_and_only_those() {
        use ParentEvent as E;
        use ParentState as S;
        let expected = [
            (S::Scheduled, E::Start, S::Running),
            (S::Scheduled, E::Cancel, S::Cancelled),
            (S::Running, E::AllSucceeded, S::Completed),
            (S::Running, E::SomeFailed, S::Failed),
            (S::Running, E::Abort, S::Failed),
            (S::Running, E::Expire, S::Failed),
            (S::Running, E::Cancel, S::Cancelled),
            (S::Running, E::CancelGraceful, S::Cancelling),
            (S::Cancelling, E::Drained, S::Cancelled),
            (S::Cancelling, E::Cancel, S::Cancelled),
            (S::Cancelling, E::Expire, S::Cancelled),
        ];
        for (from, ev, to) in expected {
            assert_eq!(from.next(ev), Some(to), "{from:?} --{ev:?}-->");
        }
        let mut edges = 0;
        for from in ParentState::ALL {
            for ev in ParentEvent::ALL {
                if let Some(to) = from.next(ev) {
                    edges += 1;
                    assert!(expected.contains(&(from, ev, to)));
                    assert!(!from.is_terminal());
                }
            }
        }
        assert_eq!(edges, expected.len());
    }

    #[test]
    fn statuses_map_to_the_preview() {
        assert_eq!(ChildState::Pending.status(), JobStatus::Enqueued);
        assert_eq!(ChildState::RetryWait.status(), JobStatus::Running);
        assert_eq!(ParentState::Cancelling.status(), JobStatus::Running);
        assert_eq!(ParentState::Scheduled.status().as_str(), "enqueued");
        assert!(ChildState::Cancelled.is_terminal());
    }
}

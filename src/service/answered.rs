//! A request's change of the job table made by the thread that writes its record, right before
//! that thread sends the request's answer.
//!
//! A run route's answer may go out from the thread that writes the log's group (see
//! `http::EarlyAnswer`), but only once the job table shows the request's change: the client
//! may send its next request (a commit of the run it just registered) on another connection
//! at once, and that request must find the run. So the change is handed over with the answer
//! ([`Applying`]): whoever learns the record's outcome first makes it (the record on disk) or
//! gives it up (its write failed), then the answer is sent. No change is ever made before its
//! record is on disk, and each is made or given up once.

use std::sync::{Arc, Mutex};

use super::Service;
use crate::config::Acknowledge;
use crate::state::jobs::Change;
use crate::storage::log::{LogError, Share};
use crate::storage::record::{Kind, Unit};
use crate::sync::{Waiter, lock};

/// Arms the answer to a request as it will be once its record is settled well (given that
/// answer with the outcome `Recorded` for a record on disk, `Delivered` for one InfluxDB
/// stored), for the thread that settles the record to send; `None` when the request's own
/// thread answers (see `http::EarlyAnswer`).
pub type ArmEarly<'a, T> = &'a dyn Fn(&T) -> Option<Arc<dyn Waiter>>;

/// What a request does once its record's outcome is known: `true`, on disk (make the change);
/// `false`, its write failed (give it up). Called once.
pub(super) type Apply = Box<dyn FnOnce(bool) + Send>;

/// A request's change, and the answer armed for it.
struct Applying {
    apply: Mutex<Option<Apply>>,
    answer: Arc<dyn Waiter>,
    /// What a change that panicked on the thread that wrote the record panicked with: raised
    /// again on the request's thread, which answers as for any panic (500).
    panicked: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl Applying {
    /// Makes or gives up the change here, unless the thread that wrote the record did.
    fn apply_here(&self, ok: bool) {
        let apply = lock(&self.apply).take();
        if let Some(apply) = apply {
            apply(ok);
        }
    }
}

impl Waiter for Applying {
    /// On disk (`ok`): makes the change, then lets the answer go. A failed write sends nothing,
    /// and leaves the giving up to the request's thread ([`Applying::apply_here`]): it may
    /// take storage I/O (a result let go is synced), which this thread, the one that writes
    /// every group, must not wait for. A change that panics sends nothing either, and its
    /// panic is raised again on the request's thread.
    fn settled(&self, ok: bool) {
        if !ok {
            self.answer.settled(false);
            return;
        }
        let apply = lock(&self.apply).take();
        let applied = match apply {
            None => Ok(()),
            Some(apply) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply(true))),
        };
        match applied {
            Ok(()) => self.answer.settled(true),
            Err(payload) => {
                *lock(&self.panicked) = Some(payload);
                self.answer.settled(false);
            }
        }
    }

    /// The change stays for the request's thread to make ([`Applying::apply_here`]).
    fn untold(&self) {
        self.answer.untold();
    }

    fn wait(&self, deadline: Option<std::time::Instant>) {
        self.answer.wait(deadline);
    }
}

impl Service {
    /// The answer armed by `answer_early` for `answer`, when `answer` is the one that goes in
    /// mode `final_in`: `Disk`, the answer for a record on disk, sent by the thread that
    /// writes the log's group; `Influxdb`, the answer for a record InfluxDB stored, sent by the
    /// deliverer ([`crate::delivery::Delivery::outcome_with`]). `None` in the other mode, and
    /// where the request's own thread answers.
    pub(super) fn arm<T>(
        &self,
        final_in: Acknowledge,
        answer_early: Option<ArmEarly<'_, T>>,
        answer: &T,
    ) -> Option<Arc<dyn Waiter>> {
        if self.delivery.acknowledges_at_disk() != (final_in == Acknowledge::Disk) {
            return None;
        }
        answer_early?(answer)
    }

    /// Records a request's job-table `change` and points ([`crate::delivery::Delivery::record`])
    /// and then `apply`s the outcome: on the thread that wrote the record, right before it sends
    /// `answer` (an answer armed for the request, `None`: none), or on this one. The record's
    /// number, or why it was not written (then `apply(false)` ran, on this thread).
    ///
    /// Panics as `apply` did, when it panicked on the thread that wrote the record (the
    /// handler's caller answers 500, as when it panics here).
    pub(super) fn record_applying(
        &self,
        change: &Change,
        units: &[Unit<'_>],
        share: Option<Share<'_>>,
        apply: Apply,
        answer: Option<Arc<dyn Waiter>>,
    ) -> Result<u64, LogError> {
        let Some(answer) = answer else {
            let recorded = self
                .delivery
                .record(Kind::Request, change, units, share, &self.stats);
            apply(recorded.is_ok());
            return recorded;
        };
        let applying = Arc::new(Applying {
            apply: Mutex::new(Some(apply)),
            answer,
            panicked: Mutex::new(None),
        });
        let recorded = self.delivery.record_with(
            Kind::Request,
            change,
            units,
            share,
            &self.stats,
            Some(Arc::clone(&applying) as Arc<dyn Waiter>),
        );
        applying.apply_here(recorded.is_ok());
        let panicked = lock(&applying.panicked).take();
        if let Some(payload) = panicked {
            std::panic::resume_unwind(payload);
        }
        recorded
    }
}

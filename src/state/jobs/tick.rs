//! The heartbeat tick over the table: every running run's heartbeat line, and the runs that
//! expire (on the monotonic clock) or are forgotten (ended longer than
//! `jobs.finished_retention`, beyond `jobs.max_finished`). No I/O.

use super::*;

impl Jobs {
    /// Writes this tick's heartbeats and expiry events as line protocol, and forgets jobs past
    /// their retention. A running job expires when not heard from for `ages.max_age_ms`, or,
    /// once it has reported progress, for `ages.progress_timeout_ms`, on the monotonic clock
    /// (`now_mono_ms`, see [`Jobs::mono_ms`]), so a step of the wall clock (`now_ms`) expires
    /// nothing. Its expiry is stamped when its silence ran out, counted from the wall-clock time
    /// it was last heard from, and never later than `now_ms`. A run whose progress is being
    /// recorded is heard from: it does not expire. Only CPU work happens under the lock, and
    /// only in proportion to the number of runs: each heartbeat is taken as a shared
    /// [`BeatLine`] and its bytes are copied once the lock is let go, so runs with large
    /// fields never hold other requests up. The caller sends the lines.
    pub fn tick(&self, (now_ms, now_mono_ms): (i64, i64), ages: &Ages) -> Tick {
        let mut tick = Tick::default();
        let mut guard = self.lock();
        let t = &mut *guard;
        while let Some(&(at_ms, uuid)) = t.ended.front() {
            if now_ms - at_ms < ages.retention_ms || t.front_is_busy() {
                break;
            }
            t.ended.pop_front();
            if t.forget(&uuid, at_ms) {
                tick.removed += 1;
            }
        }
        if tick.removed > 0 {
            t.shrink();
        }
        let mut expired = Vec::new();
        let mut beats = Vec::new();
        for job in t.jobs.values_mut() {
            if job.state != State::Running {
                continue;
            }
            let silent_ms = if job.busy {
                0
            } else {
                now_mono_ms.saturating_sub(job.seen_mono_ms)
            };
            let why = if silent_ms >= ages.max_age_ms {
                Some(("no commit", ages.max_age_ms))
            } else if job.progressed && silent_ms >= ages.progress_timeout_ms {
                Some(("no progress", ages.progress_timeout_ms))
            } else {
                None
            };
            if let Some((what, after_ms)) = why {
                let at_ms = job.last_seen_ms.saturating_add(silent_ms).min(now_ms);
                job.state = State::Expired { at_ms };
                let text = format!(
                    "load test on {} expired: {what} within {} (run {})",
                    job.run.host,
                    crate::config::format_duration(std::time::Duration::from_millis(
                        after_ms as u64
                    )),
                    job.run.uuid
                );
                let event = points::event(&job.run, Event::Expired, at_ms, text);
                event.encode(&mut tick.lines);
                tick.lines.push('\n');
                tick.units.push(TickLine {
                    run: job.run.uuid,
                    owner: job.owner.clone(),
                    end: tick.lines.len(),
                    beat: false,
                });
                expired.push((job.run.uuid, at_ms));
                release(&mut t.held, job.owner.as_deref());
                continue;
            }
            beats.push((
                job.beat.clone(),
                job.run.started_ms,
                job.run.uuid,
                job.owner.clone(),
            ));
        }
        tick.expired = expired.len();
        t.active -= tick.expired;
        for (uuid, at_ms) in expired {
            t.put(&uuid);
            tick.removed += t.ended(uuid, at_ms);
        }
        tick.change = t.take();
        drop(guard);
        for (beat, started_ms, run, owner) in beats {
            if beat.encode(started_ms, now_ms, &mut tick.lines) {
                tick.units.push(TickLine {
                    run,
                    owner,
                    end: tick.lines.len(),
                    beat: true,
                });
            }
        }
        tick
    }
}

//! [`MemoryStore`]: a [`Store`] in this process's memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::{
    RunRecord, RunStatus, RunWatch, RunWrite, Signal, SignalHandler, Store, StoreError,
    StoreErrorKind, StoreHub, StoreWrite, first_exchange_kept, instance_lost_event, now_ms,
    unix_ms,
};
use crate::agent::message_bytes;
use crate::event::Event;
use crate::model::Message;
use crate::runtime::BoxFuture;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<T> {
    Box::pin(std::future::ready(value))
}

/// Sessions and runs in memory: fast, synchronous, gone with the process. Clones share the
/// same data, so several services of one process can use it as one shared store.
///
/// Nothing is forgotten on its own: call [`Store::delete_runs_before`] and
/// [`Store::delete_session`] to bound it.
#[derive(Clone, Default)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
    hub: StoreHub,
}

#[derive(Default)]
struct Data {
    /// Session id → its exchanges, oldest first.
    sessions: HashMap<String, Vec<Vec<Message>>>,
    runs: HashMap<String, StoredRun>,
}

struct StoredRun {
    record: RunRecord,
    events: Vec<Arc<Event>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data = lock(&self.data);
        f.debug_struct("MemoryStore")
            .field("sessions", &data.sessions.len())
            .field("runs", &data.runs.len())
            .finish()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// The store's notification hub.
    pub fn hub(&self) -> &StoreHub {
        &self.hub
    }

    fn append_exchange(data: &mut Data, id: &str, messages: Vec<Message>, max: Option<usize>) {
        let exchanges = data.sessions.entry(id.to_string()).or_default();
        exchanges.push(messages);
        if let Some(max) = max {
            let sizes: Vec<usize> = exchanges
                .iter()
                .map(|e| e.iter().map(message_bytes).sum())
                .collect();
            let first = first_exchange_kept(&sizes, max);
            exchanges.drain(..first);
        }
    }

    fn apply(&self, write: RunWrite) -> Result<(), StoreError> {
        let mut data = lock(&self.data);
        let now = now_ms();
        let status = write.terminal_status();
        match (data.runs.get(&write.run_id), &write.start) {
            (Some(_), Some(_)) => {
                return Err(StoreError::new(
                    StoreErrorKind::Conflict,
                    format!("run {} is already stored", write.run_id),
                ));
            }
            (None, None) => {
                return Err(StoreError::new(
                    StoreErrorKind::Conflict,
                    format!("run {} is not stored", write.run_id),
                ));
            }
            (Some(run), None) if run.record.status != RunStatus::Running => {
                return Err(StoreError::new(
                    StoreErrorKind::Conflict,
                    format!("run {} has already ended", write.run_id),
                ));
            }
            _ => {}
        }
        let next = data
            .runs
            .get(&write.run_id)
            .map_or(0, |r| r.record.next_seq);
        for (i, event) in write.events.iter().enumerate() {
            if event.seq != next + i as u64 {
                return Err(StoreError::new(
                    StoreErrorKind::Conflict,
                    format!(
                        "run {}: event seq {} does not follow the stored {}",
                        write.run_id,
                        event.seq,
                        next + i as u64
                    ),
                ));
            }
        }
        if let Some(start) = &write.start {
            data.runs.insert(
                write.run_id.clone(),
                StoredRun {
                    record: RunRecord {
                        run_id: write.run_id.clone(),
                        status: RunStatus::Running,
                        owner: start.owner.clone(),
                        session_id: start.session_id.clone(),
                        next_seq: 0,
                        terminal: None,
                        cancel_requested: false,
                        lease_until_ms: now + start.lease.as_millis() as u64,
                        created_ms: now,
                    },
                    events: Vec::new(),
                },
            );
        }
        if let Some(append) = write.session {
            Self::append_exchange(
                &mut data,
                &append.session_id,
                append.messages,
                append.max_bytes,
            );
        }
        let Some(run) = data.runs.get_mut(&write.run_id) else {
            return Ok(());
        };
        run.record.next_seq += write.events.len() as u64;
        if let Some(status) = status {
            run.record.status = status;
            run.record.terminal = write.events.last().map(|e| Event::clone(e));
        }
        run.events.extend(write.events);
        drop(data);
        self.hub.notify(&write.run_id);
        Ok(())
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn load_session(&self, session_id: &str) -> BoxFuture<Result<Vec<Message>, StoreError>> {
        let data = lock(&self.data);
        let messages = data
            .sessions
            .get(session_id)
            .map(|exchanges| exchanges.iter().flatten().cloned().collect())
            .unwrap_or_default();
        ready(Ok(messages))
    }

    fn append_session(
        &self,
        session_id: &str,
        messages: Vec<Message>,
        max_bytes: Option<usize>,
    ) -> BoxFuture<Result<(), StoreError>> {
        Self::append_exchange(&mut lock(&self.data), session_id, messages, max_bytes);
        ready(Ok(()))
    }

    fn delete_session(&self, session_id: &str) -> BoxFuture<Result<bool, StoreError>> {
        ready(Ok(lock(&self.data).sessions.remove(session_id).is_some()))
    }

    fn write_run(&self, write: RunWrite) -> StoreWrite {
        StoreWrite::Done(self.apply(write))
    }

    fn run(&self, run_id: &str) -> BoxFuture<Result<Option<RunRecord>, StoreError>> {
        ready(Ok(lock(&self.data)
            .runs
            .get(run_id)
            .map(|r| r.record.clone())))
    }

    fn read_events(
        &self,
        run_id: &str,
        from: u64,
        limit: usize,
    ) -> BoxFuture<Result<Vec<Event>, StoreError>> {
        let data = lock(&self.data);
        let events = data
            .runs
            .get(run_id)
            .map(|r| {
                r.events
                    .iter()
                    .skip(from.min(usize::MAX as u64) as usize)
                    .take(limit)
                    .map(|e| Event::clone(e))
                    .collect()
            })
            .unwrap_or_default();
        ready(Ok(events))
    }

    fn renew_leases(
        &self,
        owner: &str,
        run_ids: Vec<String>,
        lease: Duration,
    ) -> BoxFuture<Result<Vec<String>, StoreError>> {
        let until = now_ms() + lease.as_millis() as u64;
        let mut data = lock(&self.data);
        let mut cancel = Vec::new();
        for id in run_ids {
            if let Some(run) = data.runs.get_mut(&id)
                && run.record.owner == owner
                && run.record.status == RunStatus::Running
            {
                run.record.lease_until_ms = until;
                if run.record.cancel_requested {
                    cancel.push(id);
                }
            }
        }
        ready(Ok(cancel))
    }

    fn fail_expired(&self) -> BoxFuture<Result<Vec<String>, StoreError>> {
        let now = now_ms();
        let mut failed = Vec::new();
        {
            let mut data = lock(&self.data);
            for run in data.runs.values_mut() {
                if run.record.status == RunStatus::Running && run.record.lease_until_ms < now {
                    let event = instance_lost_event(run.record.next_seq);
                    run.record.next_seq += 1;
                    run.record.status = RunStatus::Failed;
                    run.record.terminal = Some(event.clone());
                    run.events.push(Arc::new(event));
                    failed.push(run.record.run_id.clone());
                }
            }
        }
        for id in &failed {
            self.hub.notify(id);
        }
        ready(Ok(failed))
    }

    fn request_cancel(&self, run_id: &str) -> BoxFuture<Result<bool, StoreError>> {
        let requested = {
            let mut data = lock(&self.data);
            match data.runs.get_mut(run_id) {
                Some(run) if run.record.status == RunStatus::Running => {
                    run.record.cancel_requested = true;
                    true
                }
                _ => false,
            }
        };
        if requested {
            self.hub.deliver(&Signal::Cancel(run_id.to_string()));
        }
        ready(Ok(requested))
    }

    fn signal(&self, signal: Signal) -> BoxFuture<Result<(), StoreError>> {
        self.hub.deliver(&signal);
        ready(Ok(()))
    }

    fn on_signal(&self, handler: SignalHandler) {
        self.hub.on_signal(handler);
    }

    fn watch(&self, run_id: &str) -> RunWatch {
        self.hub.watch(run_id)
    }

    fn delete_runs_before(&self, before: SystemTime) -> BoxFuture<Result<u64, StoreError>> {
        let before = unix_ms(before);
        let mut data = lock(&self.data);
        let len = data.runs.len();
        data.runs
            .retain(|_, r| r.record.status == RunStatus::Running || r.record.created_ms >= before);
        ready(Ok((len - data.runs.len()) as u64))
    }
}

//! Test helpers shared by the integration tests: a model fed by the test, with a drop counter.
#![allow(dead_code)]

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agent_core::error::{ErrorKind, ModelError};
use agent_core::model::{Model, ModelContext, ModelDelta, ModelRequest, ModelStream};
use futures_channel::mpsc;
use futures_core::Stream;

/// How long any single wait in a test may take before the test fails.
pub const WATCHDOG: Duration = Duration::from_secs(10);

/// A gated model: its (single) answer is the text the test sends, one delta per message,
/// produced only when the test sends it. It counts how many of its streams were dropped.
#[derive(Debug)]
pub struct GatedModel {
    rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    drops: Arc<AtomicUsize>,
}

/// The test's side of a [`GatedModel`].
#[derive(Clone)]
pub struct Gate {
    tx: mpsc::UnboundedSender<String>,
    drops: Arc<AtomicUsize>,
}

impl Gate {
    /// Let the model produce one text delta.
    pub fn send(&self, text: &str) {
        self.tx
            .unbounded_send(text.to_string())
            .expect("the model stream is gone");
    }

    /// End the model's answer.
    pub fn finish(&self) {
        self.tx.close_channel();
    }

    /// How many model streams were dropped so far.
    pub fn drops(&self) -> usize {
        self.drops.load(Ordering::SeqCst)
    }

    /// Wait (bounded) until the model stream has been dropped.
    pub fn wait_dropped(&self, what: &str) {
        let deadline = Instant::now() + WATCHDOG;
        while self.drops() == 0 {
            assert!(
                Instant::now() < deadline,
                "the model stream was not dropped: {what}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

pub fn gated_model() -> (GatedModel, Gate) {
    let (tx, rx) = mpsc::unbounded();
    let drops = Arc::new(AtomicUsize::new(0));
    (
        GatedModel {
            rx: Mutex::new(Some(rx)),
            drops: drops.clone(),
        },
        Gate { tx, drops },
    )
}

impl Model for GatedModel {
    fn name(&self) -> &str {
        "gated"
    }

    fn stream(&self, _request: ModelRequest, _cx: ModelContext) -> ModelStream {
        match self.rx.lock().unwrap().take() {
            Some(rx) => Box::pin(CountedStream {
                rx,
                drops: self.drops.clone(),
            }),
            None => Box::pin(futures_util::stream::once(async {
                Err(ModelError::new(
                    ErrorKind::Model,
                    "the gated model answers once",
                ))
            })),
        }
    }
}

struct CountedStream {
    rx: mpsc::UnboundedReceiver<String>,
    drops: Arc<AtomicUsize>,
}

impl Stream for CountedStream {
    type Item = Result<ModelDelta, ModelError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx)
            .poll_next(cx)
            .map(|text| text.map(|t| Ok(ModelDelta::Text(t))))
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

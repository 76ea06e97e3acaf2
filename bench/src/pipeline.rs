//! (1) Pipeline overhead: a scripted model's text deltas through the agent to the consumer,
//! against the floor of iterating the same deltas as a plain `futures::stream::iter`.

use std::time::Instant;

use agent_core::event::EventKind;
use agent_core::model::{ScriptedModel, Turn};
use futures_util::StreamExt;

use crate::config::Config;
use crate::exec::{Exec, Flavor};
use crate::stats::{Samples, Summary};
use crate::upstream::delta_text;

/// The result of the pipeline measurement.
pub struct PipelineResult {
    /// Text deltas per run.
    pub deltas: usize,
    /// Repetitions per contender.
    pub reps: usize,
    /// The floor, ns per delta.
    pub floor: Summary,
    /// Each backend, ns per delta.
    pub rows: Vec<(Flavor, Summary)>,
}

/// The floor: the same deltas, cloned from the script (as the scripted model does), as a
/// plain stream, consumed by the same kind of loop.
fn floor_once(deltas: &[String]) -> (f64, usize) {
    let start = Instant::now();
    let bytes = agent_core::runtime::block_on(async {
        let mut stream = futures_util::stream::iter(deltas.to_vec());
        let mut bytes = 0usize;
        let mut count = 0usize;
        while let Some(text) = stream.next().await {
            bytes += text.len();
            count += 1;
        }
        std::hint::black_box(bytes);
        count
    });
    (start.elapsed().as_nanos() as f64, bytes)
}

/// Measure.
pub fn run(config: &Config) -> PipelineResult {
    let n = config.pipeline_deltas;
    let deltas: Vec<String> = (0..n).map(delta_text).collect();
    let mut turn = Turn::new();
    for text in &deltas {
        turn = turn.text(text.clone());
    }
    let model = ScriptedModel::from_fn(move |_, _| turn.clone());
    let contenders: Vec<(Exec, agent_core::agent::Agent)> = Flavor::ALL
        .iter()
        .map(|&flavor| {
            let exec = Exec::new(flavor);
            let agent = exec
                .agent_builder()
                .model(model.clone())
                .build()
                .expect("pipeline agent");
            (exec, agent)
        })
        .collect();

    let time_backend = |exec: &Exec, agent: &agent_core::agent::Agent| -> f64 {
        let start = Instant::now();
        let (texts, _bytes) = exec.fold(agent, "go", (0usize, 0usize), |acc, event| {
            if let EventKind::TextDelta { text } = &event.kind {
                acc.0 += 1;
                acc.1 += text.len();
            }
            true
        });
        let elapsed = start.elapsed().as_nanos() as f64;
        assert_eq!(
            texts,
            n,
            "{}: wrong number of text deltas",
            exec.flavor().label()
        );
        elapsed / n as f64
    };

    // Warm-up: one untimed run of each.
    floor_once(&deltas);
    for (exec, agent) in &contenders {
        time_backend(exec, agent);
    }

    let mut floor = Samples::new();
    let mut rows: Vec<Samples> = contenders.iter().map(|_| Samples::new()).collect();
    let slots = contenders.len() + 1;
    for rep in 0..config.pipeline_reps {
        // Alternate: each repetition starts with a different contender.
        for k in 0..slots {
            let slot = (k + rep) % slots;
            if slot == 0 {
                let (ns, count) = floor_once(&deltas);
                assert_eq!(count, n);
                floor.push(ns / n as f64);
            } else {
                let (exec, agent) = &contenders[slot - 1];
                rows[slot - 1].push(time_backend(exec, agent));
            }
        }
    }
    PipelineResult {
        deltas: n,
        reps: config.pipeline_reps,
        floor: floor.summary(),
        rows: contenders
            .iter()
            .zip(rows.iter_mut())
            .map(|((exec, _), samples)| (exec.flavor(), samples.summary()))
            .collect(),
    }
}

/// One contender of the pipeline, for `bench __profile`.
pub struct Profile {
    deltas: Vec<String>,
    backend: Option<(Exec, agent_core::agent::Agent)>,
}

impl Profile {
    /// The floor (`None`) or a backend.
    pub fn new(config: &Config, flavor: Option<Flavor>) -> Profile {
        let deltas: Vec<String> = (0..config.pipeline_deltas).map(delta_text).collect();
        let backend = flavor.map(|flavor| {
            let mut turn = Turn::new();
            for text in &deltas {
                turn = turn.text(text.clone());
            }
            let exec = Exec::new(flavor);
            let agent = exec
                .agent_builder()
                .model(ScriptedModel::from_fn(move |_, _| turn.clone()))
                .build()
                .expect("agent");
            (exec, agent)
        });
        Profile { deltas, backend }
    }

    /// One run.
    pub fn once(&mut self) {
        match &self.backend {
            None => {
                floor_once(&self.deltas);
            }
            Some((exec, agent)) => {
                exec.fold(agent, "go", 0usize, |n, _| {
                    *n += 1;
                    true
                });
            }
        }
    }
}

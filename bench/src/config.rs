//! How much each measurement does: the full run and the `--quick` smoke run.

/// Sizes and repetition counts of every measurement.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--quick`: a smoke run of a few seconds.
    pub quick: bool,
    /// (1) text deltas per run.
    pub pipeline_deltas: usize,
    /// (1) repetitions per contender.
    pub pipeline_reps: usize,
    /// (2) chunks the upstream streams.
    pub http_chunks: usize,
    /// (2) repetitions per contender.
    pub http_reps: usize,
    /// (8) paced time-to-first-delta trials per contender.
    pub relay_ttfd_trials: usize,
    /// (3) trials per contender.
    pub ttfe_trials: usize,
    /// (3) upstream pace between chunks, ms.
    pub ttfe_pace_ms: u64,
    /// (4) concurrent SSE clients.
    pub fanout_clients: usize,
    /// (4) deltas per stream.
    pub fanout_deltas: u32,
    /// (4) pace between deltas, ms.
    pub fanout_pace_ms: u64,
    /// (4) repetitions per backend.
    pub fanout_reps: usize,
    /// (5) concurrent runs.
    pub scale_runs: usize,
    /// (5) deltas per run.
    pub scale_deltas: usize,
    /// (5b) concurrent streams through HTTP.
    pub http_scale_streams: usize,
    /// (5b) deltas per stream.
    pub http_scale_deltas: usize,
    /// (5b) pace between deltas, ms.
    pub http_scale_pace_ms: u64,
    /// (5) repetitions per runtime.
    pub scale_reps: usize,
    /// (6) size of the SSE stream, bytes.
    pub sse_bytes: usize,
    /// (6) size of the one long line, bytes.
    pub sse_line_bytes: usize,
    /// (6) repetitions.
    pub sse_reps: usize,
    /// (7) agents built per timing sample.
    pub construct_iters: usize,
    /// (7) timing samples.
    pub construct_reps: usize,
}

impl Config {
    /// The full run (`cargo run --release -p bench`).
    pub fn full() -> Config {
        Config {
            quick: false,
            pipeline_deltas: 200_000,
            pipeline_reps: 21,
            http_chunks: 20_000,
            http_reps: 21,
            relay_ttfd_trials: 100,
            ttfe_trials: 500,
            ttfe_pace_ms: 2,
            fanout_clients: 1_000,
            fanout_deltas: 100,
            fanout_pace_ms: 20,
            fanout_reps: 3,
            scale_runs: 10_000,
            scale_deltas: 20,
            scale_reps: 5,
            http_scale_streams: 10_000,
            http_scale_deltas: 40,
            http_scale_pace_ms: 200,
            sse_bytes: 64 * 1024 * 1024,
            sse_line_bytes: 8 * 1024 * 1024,
            sse_reps: 9,
            construct_iters: 20_000,
            construct_reps: 21,
        }
    }

    /// The smoke run (`--quick`): every code path, small sizes, seconds.
    pub fn quick() -> Config {
        Config {
            quick: true,
            pipeline_deltas: 20_000,
            pipeline_reps: 3,
            http_chunks: 2_000,
            http_reps: 3,
            relay_ttfd_trials: 5,
            ttfe_trials: 10,
            ttfe_pace_ms: 2,
            fanout_clients: 50,
            fanout_deltas: 10,
            fanout_pace_ms: 20,
            fanout_reps: 1,
            scale_runs: 500,
            scale_deltas: 5,
            scale_reps: 1,
            http_scale_streams: 200,
            http_scale_deltas: 5,
            http_scale_pace_ms: 50,
            sse_bytes: 4 * 1024 * 1024,
            sse_line_bytes: 1024 * 1024,
            sse_reps: 2,
            construct_iters: 2_000,
            construct_reps: 3,
        }
    }
}

//! The whole conformance suite, on both smol flavours: one thread driving everything (where
//! starvation would show) and an executor run by a pool of threads.

conformance::suite!(smol_single_thread => test_support::backends::smol::SmolSingleThread::default());
conformance::suite!(smol_multi_thread => test_support::backends::smol::SmolMultiThread::default());

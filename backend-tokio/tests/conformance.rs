//! The whole conformance suite, on both tokio flavours: a current-thread runtime (one thread
//! drives the consumer and every task, where starvation would show) and a multi-thread
//! runtime.

conformance::suite!(tokio_current_thread => test_support::backends::tokio::TokioCurrentThread::default());
conformance::suite!(tokio_multi_thread => test_support::backends::tokio::TokioMultiThread::default());

//! The whole conformance suite, on both tokio flavours: a current-thread runtime (one thread
//! drives the consumer and every task, where starvation would show) and a multi-thread
//! runtime; and both again with `TokioClient` as the HTTP client instead of `ReqwestClient`.

conformance::suite!(tokio_current_thread => test_support::backends::tokio::TokioCurrentThread::default());
conformance::suite!(tokio_multi_thread => test_support::backends::tokio::TokioMultiThread::default());
conformance::suite!(tokio_current_thread_tokio_client => test_support::backends::tokio::TokioCurrentThread::with_tokio_client());
conformance::suite!(tokio_multi_thread_tokio_client => test_support::backends::tokio::TokioMultiThread::with_tokio_client());

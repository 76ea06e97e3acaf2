//! The whole conformance suite on plain threads: the Iterator entry point, the thread pool,
//! the ureq client and the threaded server.

conformance::suite!(threads => test_support::backends::blocking::Threads);

//! The [`suite!`] macro: one `#[test]` per case for a backend.

/// Generate the conformance suite for a backend: a module `name` with one `#[test]` per
/// case, named `conformance_<case>`, each running on a fresh backend built by `backend`
/// (an expression evaluated once per test, on the case's thread) under the watchdog: a
/// stuck case fails within [`CASE_LIMIT`](crate::kit::watchdog::CASE_LIMIT) naming the step
/// it waited for; it never hangs.
///
/// Cases that cannot apply to the backend (starvation on a multi-threaded executor) still
/// generate a test, which passes printing `n/a (not a pass)` and the reason
/// (written to the process's stderr, so it shows without `--nocapture`; the report matrix shows them as `n/a`).
/// One more test, `conformance_suite_is_complete`, checks that the macro covers every case.
///
/// ```ignore
/// // tests/conformance.rs of a backend crate
/// conformance::suite!(tokio_current_thread => my_backend::TokioCurrentThread::default());
/// conformance::suite!(tokio_multi_thread => my_backend::TokioMultiThread::default());
/// ```
///
/// `suite!(name, expr)` is accepted as well. Items of the invoking module are in scope in
/// `expr` (the generated module glob-imports its parent).
#[macro_export]
macro_rules! suite {
    ($name:ident => $backend:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn make_backend() -> ::std::boxed::Box<dyn $crate::Backend> {
                ::std::boxed::Box::new($backend)
            }

            $crate::__suite_tests! {
                make_backend;
            conformance_incremental_model => "incremental_model",
            conformance_incremental_http => "incremental_http",
            conformance_incremental_server_runs => "incremental_server_runs",
            conformance_incremental_server_chat => "incremental_server_chat",
            conformance_free_running_consume => "free_running_consume",
            conformance_free_running_http => "free_running_http",
            conformance_free_running_server_runs => "free_running_server_runs",
            conformance_free_running_server_chat => "free_running_server_chat",
            conformance_free_running_server_events => "free_running_server_events",
            conformance_starvation_ready_deltas => "starvation_ready_deltas",
            conformance_starvation_blocking_tool => "starvation_blocking_tool",
            conformance_parallel_async_tools_order => "parallel_async_tools_order",
            conformance_parallel_blocking_tools_order => "parallel_blocking_tools_order",
            conformance_parallel_tools_wall_time => "parallel_tools_wall_time",
            conformance_cancel_drop_closes_upstream => "cancel_drop_closes_upstream",
            conformance_cancel_drop_drops_async_tool => "cancel_drop_drops_async_tool",
            conformance_cancel_drop_discards_blocking_result => "cancel_drop_discards_blocking_result",
            conformance_cancel_server_disconnect => "cancel_server_disconnect",
            conformance_cancel_server_disconnect_closes_upstream => "cancel_server_disconnect_closes_upstream",
            conformance_cancel_server_shutdown => "cancel_server_shutdown",
            conformance_runs_resume => "runs_resume",
            conformance_runs_cancel => "runs_cancel",
            conformance_runs_detach_grace => "runs_detach_grace",
            conformance_backpressure_consume => "backpressure_consume",
            conformance_backpressure_server => "backpressure_server",
            conformance_error_upstream_500 => "error_upstream_500",
            conformance_error_rate_limited_then_success => "error_rate_limited_then_success",
            conformance_error_reset_mid_stream => "error_reset_mid_stream",
            conformance_error_malformed_chunk => "error_malformed_chunk",
            conformance_error_oversized_line => "error_oversized_line",
            conformance_error_first_byte_timeout => "error_first_byte_timeout",
            conformance_error_inactivity_timeout => "error_inactivity_timeout",
            conformance_error_unknown_tool => "error_unknown_tool",
            conformance_error_bad_tool_arguments => "error_bad_tool_arguments",
            conformance_error_tool_panic => "error_tool_panic",
            conformance_error_max_rounds => "error_max_rounds",
            conformance_transcript_plain_answer => "transcript_plain_answer",
            conformance_transcript_one_tool_round => "transcript_one_tool_round",
            conformance_transcript_parallel_tools => "transcript_parallel_tools",
            conformance_transcript_tool_error => "transcript_tool_error",
            conformance_transcript_upstream_failure => "transcript_upstream_failure",
            conformance_contract_consume_runs => "contract_consume_runs",
            conformance_contract_server_frames => "contract_server_frames",
            conformance_server_requests => "server_requests",
            conformance_fault_trickle => "fault_trickle",
            conformance_fault_truncated_utf8 => "fault_truncated_utf8",
            conformance_fault_huge_line => "fault_huge_line",
            conformance_fault_endless_stream => "fault_endless_stream",
            conformance_leak_consume_runs => "leak_consume_runs",
            conformance_leak_server_runs => "leak_server_runs",
            conformance_soak_sequential => "soak_sequential",
            conformance_soak_concurrent => "soak_concurrent",
            conformance_server_concurrency_limit => "server_concurrency_limit",
            conformance_server_write_timeout => "server_write_timeout",
            conformance_server_malformed_requests => "server_malformed_requests",
            conformance_output_too_large => "output_too_large",
            conformance_upstream_redirect_not_followed => "upstream_redirect_not_followed",
            conformance_upstream_oversized_head => "upstream_oversized_head",
            conformance_server_cors => "server_cors",
            conformance_front_end_ai_sdk_lockstep => "front_end_ai_sdk_lockstep",
            conformance_front_end_ag_ui_lockstep => "front_end_ag_ui_lockstep",
            conformance_front_end_ai_sdk_free_running => "front_end_ai_sdk_free_running",
            conformance_front_end_ag_ui_free_running => "front_end_ag_ui_free_running",
            conformance_front_end_ai_sdk_disconnect => "front_end_ai_sdk_disconnect",
            conformance_front_end_ag_ui_disconnect => "front_end_ag_ui_disconnect",
            conformance_responses_lockstep => "responses_lockstep",
            conformance_responses_free_running => "responses_free_running",
            conformance_responses_cancel_disconnect => "responses_cancel_disconnect",
            conformance_server_session_bounds => "server_session_bounds",
            conformance_anthropic_incremental => "anthropic_incremental",
            conformance_anthropic_tool_round => "anthropic_tool_round",
            conformance_structured_output_transcript => "structured_output_transcript",
            conformance_structured_output_invalid => "structured_output_invalid",
            conformance_mcp_stdio_tool_round => "mcp_stdio_tool_round",
            conformance_mcp_stdio_faults => "mcp_stdio_faults",
            conformance_mcp_stdio_cancel_on_drop => "mcp_stdio_cancel_on_drop",
            conformance_mcp_http_tool_round => "mcp_http_tool_round",
            conformance_mcp_http_faults => "mcp_http_faults",
            conformance_approval_stream_approved => "approval_stream_approved",
            conformance_approval_stream_denied => "approval_stream_denied",
            conformance_approval_timeout => "approval_timeout",
            conformance_approval_cancelled_while_waiting => "approval_cancelled_while_waiting",
            conformance_approval_http_approved => "approval_http_approved",
            conformance_approval_http_denied_detached => "approval_http_denied_detached",
            }
        }
    };
    ($name:ident, $backend:expr) => {
        $crate::suite!($name => $backend);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __suite_tests {
    ($make:ident; $($test:ident => $case:literal,)*) => {
        $(
            #[test]
            fn $test() {
                $crate::runner::run_test($case, $make);
            }
        )*

        #[test]
        fn conformance_suite_is_complete() {
            $crate::runner::assert_suite_complete(&[$($case),*]);
        }
    };
}

/// Generate the store cases ([`STORE_CASES`](crate::cases::stores::STORE_CASES)) for a
/// backend and a store: a module `name` with one `#[test]` per case, each on a fresh
/// backend from `backend` with the store fixture from `fixture` (an expression of type
/// `Option<Box<dyn StoreFixture>>`: `None` when the store is not available, which each test
/// reports loudly as skipped).
///
/// ```ignore
/// conformance::store_suite!(tokio_sqlite => MyBackend::default(), Some(Box::new(MySqliteFixture::new())));
/// ```
#[macro_export]
macro_rules! store_suite {
    ($name:ident => $backend:expr, $fixture:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn make_backend() -> ::std::boxed::Box<dyn $crate::Backend> {
                ::std::boxed::Box::new($backend)
            }

            fn fixture()
            -> ::std::option::Option<::std::boxed::Box<dyn $crate::cases::stores::StoreFixture>>
            {
                $fixture
            }

            #[test]
            fn store_runs() {
                $crate::cases::stores::run_store_test("store_runs", make_backend, fixture());
            }

            #[test]
            fn store_sessions() {
                $crate::cases::stores::run_store_test("store_sessions", make_backend, fixture());
            }

            #[test]
            fn store_concurrent_appenders() {
                $crate::cases::stores::run_store_test(
                    "store_concurrent_appenders",
                    make_backend,
                    fixture(),
                );
            }

            #[test]
            fn store_two_instances() {
                $crate::cases::stores::run_store_test(
                    "store_two_instances",
                    make_backend,
                    fixture(),
                );
            }

            #[test]
            fn store_suite_is_complete() {
                let generated = [
                    "store_runs",
                    "store_sessions",
                    "store_concurrent_appenders",
                    "store_two_instances",
                ];
                assert_eq!(
                    $crate::cases::stores::STORE_CASES
                        .iter()
                        .map(|c| c.name)
                        .collect::<::std::vec::Vec<_>>(),
                    generated,
                    "store_suite! generates a test per store case"
                );
            }
        }
    };
}

//! Tools the model can call: a name, a description, a JSON Schema of the arguments, a call.
//!
//! Four constructors cover the usual cases:
//!
//! * [`async_tool`]: an async closure over raw JSON arguments, run on the executor;
//! * [`blocking_tool`]: a synchronous closure, run through the runtime's blocking pool;
//! * [`typed_tool`] / [`typed_blocking_tool`]: the same over a `serde::Deserialize` argument
//!   type whose JSON Schema is derived with `schemars`.
//!
//! ```
//! use agent_core::tool::{typed_blocking_tool, Tool, ToolError};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Add { a: f64, b: f64 }
//!
//! let add = typed_blocking_tool("add", "Add two numbers", |args: Add| -> Result<f64, ToolError> {
//!     Ok(args.a + args.b)
//! });
//! assert_eq!(add.definition().name, "add");
//! assert_eq!(add.definition().parameters["properties"]["a"]["type"], "number");
//! ```
//!
//! Whatever goes wrong in a call — an unknown tool name, arguments that do not parse, an
//! error returned by the tool, a panic — becomes a [`ToolResult::Error`] that is given back
//! to the model and shown in the `tool_call_completed` event. The run goes on.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::runtime::{self, BoxFuture, SharedRuntime, TaskError};

/// How a tool is described to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// The outcome of a tool call, as reported in the `tool_call_completed` event.
///
/// JSON: `{"status":"ok","output":…}` or `{"status":"error","kind":"…","message":"…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ToolResult {
    /// The tool returned a value.
    Ok {
        /// The value (a JSON string for text output).
        output: Value,
    },
    /// The call failed; the message is given to the model.
    Error {
        /// Why.
        kind: ToolErrorKind,
        /// Explanation for the model and the user.
        message: String,
    },
}

impl ToolResult {
    /// The text given back to the model: a string output as is, any other value as JSON, an
    /// error as `error (<kind>): <message>`.
    pub fn to_model_text(&self) -> String {
        match self {
            ToolResult::Ok {
                output: Value::String(s),
            } => s.clone(),
            ToolResult::Ok { output } => output.to_string(),
            ToolResult::Error { kind, message } => format!("error ({}): {message}", kind.as_str()),
        }
    }

    /// `true` for [`ToolResult::Error`].
    pub fn is_error(&self) -> bool {
        matches!(self, ToolResult::Error { .. })
    }
}

/// Why a tool call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolErrorKind {
    /// The model named a tool the agent does not have.
    UnknownTool,
    /// The arguments were not valid JSON or did not match the tool's argument type.
    InvalidArguments,
    /// The tool ran and returned an error.
    Failed,
    /// The tool panicked (caught; the process and the run go on).
    Panicked,
    /// The runtime dropped the tool's task before it finished.
    Cancelled,
    /// The call needed approval and was denied (or its approval timed out): the tool did not
    /// run. The message carries the reason.
    Denied,
}

impl ToolErrorKind {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolErrorKind::UnknownTool => "unknown_tool",
            ToolErrorKind::InvalidArguments => "invalid_arguments",
            ToolErrorKind::Failed => "failed",
            ToolErrorKind::Panicked => "panicked",
            ToolErrorKind::Cancelled => "cancelled",
            ToolErrorKind::Denied => "denied",
        }
    }
}

/// An error returned by a tool.
///
/// ```
/// use agent_core::tool::{ToolError, ToolErrorKind};
/// let err = ToolError::failed("division by zero");
/// assert_eq!(err.kind, ToolErrorKind::Failed);
/// assert_eq!(err.to_string(), "failed: division by zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    /// Why.
    pub kind: ToolErrorKind,
    /// Explanation for the model and the user.
    pub message: String,
}

impl ToolError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ToolErrorKind, message: impl Into<String>) -> Self {
        ToolError {
            kind,
            message: message.into(),
        }
    }

    /// The tool ran and failed.
    pub fn failed(message: impl Into<String>) -> Self {
        ToolError {
            kind: ToolErrorKind::Failed,
            message: message.into(),
        }
    }

    /// The arguments were unusable.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        ToolError {
            kind: ToolErrorKind::InvalidArguments,
            message: message.into(),
        }
    }

    /// Turn into the reported result.
    pub fn into_result(self) -> ToolResult {
        ToolResult::Error {
            kind: self.kind,
            message: self.message,
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for ToolError {}

/// `?` on the errors tools meet most: each becomes a [`ToolErrorKind::Failed`] result with
/// the error's message, given back to the model.
///
/// ```
/// use agent_core::tool::ToolError;
/// fn read_config() -> Result<String, ToolError> {
///     let text = std::fs::read_to_string("/definitely/missing/file")?;
///     let port: u16 = text.trim().parse()?;
///     Ok(port.to_string())
/// }
/// assert!(read_config().is_err());
/// ```
macro_rules! tool_error_from {
    ($($error:ty),* $(,)?) => {
        $(
            impl From<$error> for ToolError {
                fn from(error: $error) -> Self {
                    ToolError::failed(error.to_string())
                }
            }
        )*
    };
}

tool_error_from!(
    std::io::Error,
    serde_json::Error,
    std::fmt::Error,
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::str::Utf8Error,
    std::string::FromUtf8Error,
    String,
    &str,
    Box<dyn std::error::Error + Send + Sync>,
);

impl From<TaskError> for ToolError {
    fn from(err: TaskError) -> Self {
        match err {
            TaskError::Panicked(msg) => ToolError {
                kind: ToolErrorKind::Panicked,
                message: format!("tool panicked: {msg}"),
            },
            TaskError::Cancelled => ToolError {
                kind: ToolErrorKind::Cancelled,
                message: "the runtime dropped the tool before it finished".into(),
            },
        }
    }
}

/// What a tool call may use: the run's runtime, the call id, and whether the call was
/// cancelled.
///
/// Typed tools get it as an optional second argument
/// (`typed_tool(name, description, |args: A, cx: ToolContext| …)`).
#[derive(Clone)]
pub struct ToolContext {
    /// The runtime of the run (for blocking work and timers).
    pub runtime: SharedRuntime,
    /// The id of this call.
    pub call_id: String,
    cancelled: Arc<AtomicBool>,
}

impl fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolContext")
            .field("runtime", &self.runtime.name())
            .field("call_id", &self.call_id)
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl ToolContext {
    /// The context of call `call_id` on `runtime`, not cancelled.
    pub fn new(runtime: SharedRuntime, call_id: impl Into<String>) -> Self {
        ToolContext {
            runtime,
            call_id: call_id.into(),
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `true` once the call was given up: its run was cancelled, failed, or dropped while
    /// the call was running. An async tool is simply dropped then; a blocking tool (which
    /// cannot be interrupted) can check this between steps and stop early, as its result
    /// would be discarded anyway.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// A guard that marks the call cancelled when dropped before [`CallGuard::finish`]:
    /// the agent loop holds one around each call's future.
    pub(crate) fn guard(&self) -> CallGuard {
        CallGuard {
            cancelled: Some(self.cancelled.clone()),
        }
    }
}

/// Marks a call cancelled when dropped before it finished (see [`ToolContext::guard`]).
pub(crate) struct CallGuard {
    cancelled: Option<Arc<AtomicBool>>,
}

impl CallGuard {
    /// The call finished: dropping the guard changes nothing.
    pub(crate) fn finish(mut self) {
        self.cancelled = None;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(flag) = self.cancelled.take() {
            flag.store(true, Ordering::Release);
        }
    }
}

/// The future a [`Tool`] returns.
pub type ToolFuture = BoxFuture<Result<Value, ToolError>>;

/// A tool the model can call.
///
/// Contract: `call` returns quickly (do blocking work through
/// [`runtime::blocking`] or use [`blocking_tool`]); the future may
/// be dropped at any time when the run is cancelled; a panic in `call` or in its future is
/// caught by the agent and reported as [`ToolErrorKind::Panicked`].
pub trait Tool: Send + Sync + 'static {
    /// Name, description and argument schema.
    fn definition(&self) -> &ToolDefinition;

    /// Run the tool with `arguments` (already parsed as JSON).
    fn call(&self, arguments: Value, cx: ToolContext) -> ToolFuture;

    /// Whether each call must be approved by a human before it runs (default `false`). The
    /// agent's [`approval_policy`](crate::agent::AgentBuilder::approval_policy), when set,
    /// decides instead (it is told this answer). See [`crate::agent::ApprovalHandle`].
    fn requires_approval(&self) -> bool {
        false
    }
}

impl fmt::Debug for dyn Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.definition().name)
            .finish_non_exhaustive()
    }
}

type CallFn = dyn Fn(Value, ToolContext) -> ToolFuture + Send + Sync;

/// A tool made from a closure; built by [`async_tool`], [`blocking_tool`], [`typed_tool`] and
/// [`typed_blocking_tool`].
pub struct FnTool {
    definition: ToolDefinition,
    call: Box<CallFn>,
    requires_approval: bool,
}

impl fmt::Debug for FnTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTool")
            .field("definition", &self.definition)
            .field("requires_approval", &self.requires_approval)
            .finish_non_exhaustive()
    }
}

impl FnTool {
    /// Make every call of this tool wait for a human's approval before it runs (see
    /// [`ApprovalHandle`](crate::agent::ApprovalHandle)).
    ///
    /// ```
    /// use agent_core::tool::{async_tool, Tool};
    /// let wire = async_tool("wire_money", "Send money", serde_json::json!({"type": "object"}), |_| async {
    ///     Ok(serde_json::json!("sent"))
    /// })
    /// .require_approval();
    /// assert!(wire.requires_approval());
    /// ```
    pub fn require_approval(mut self) -> Self {
        self.requires_approval = true;
        self
    }
}

impl Tool for FnTool {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn call(&self, arguments: Value, cx: ToolContext) -> ToolFuture {
        (self.call)(arguments, cx)
    }

    fn requires_approval(&self) -> bool {
        self.requires_approval
    }
}

fn definition(
    name: impl Into<String>,
    description: impl Into<String>,
    parameters: Value,
) -> ToolDefinition {
    ToolDefinition {
        name: name.into(),
        description: description.into(),
        parameters,
    }
}

/// A tool from an async closure over the raw JSON arguments; it runs on the executor.
///
/// ```
/// use agent_core::tool::{async_tool, Tool};
/// let echo = async_tool("echo", "Echo the arguments", serde_json::json!({"type": "object"}), |args| async move {
///     Ok(args)
/// });
/// assert_eq!(echo.definition().name, "echo");
/// ```
pub fn async_tool<F, Fut>(
    name: impl Into<String>,
    description: impl Into<String>,
    parameters: Value,
    f: F,
) -> FnTool
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
{
    FnTool {
        definition: definition(name, description, parameters),
        requires_approval: false,
        call: Box::new(move |args, _cx| Box::pin(f(args))),
    }
}

/// A tool from a synchronous closure; each call runs on the runtime's blocking pool, so it
/// may block (sleep, read files, call a blocking client) without freezing the executor.
///
/// If the run is cancelled while the closure runs, the closure finishes on its thread and its
/// result is discarded.
pub fn blocking_tool<F>(
    name: impl Into<String>,
    description: impl Into<String>,
    parameters: Value,
    f: F,
) -> FnTool
where
    F: Fn(Value) -> Result<Value, ToolError> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    FnTool {
        definition: definition(name, description, parameters),
        requires_approval: false,
        call: Box::new(move |args, cx| {
            let f = f.clone();
            let handle = runtime::blocking(&*cx.runtime, move || f(args));
            Box::pin(async move { handle.await? })
        }),
    }
}

/// The JSON Schema of `T`, as a tool's `parameters`.
pub fn schema_for<T: schemars::JsonSchema>() -> Value {
    let schema = schemars::schema_for!(T);
    let mut value =
        serde_json::to_value(schema).unwrap_or_else(|_| serde_json::json!({"type": "object"}));
    if let Value::Object(map) = &mut value {
        map.remove("$schema");
        map.remove("title");
    }
    value
}

fn parse_arguments<A: DeserializeOwned>(arguments: Value) -> Result<A, ToolError> {
    serde_json::from_value(arguments).map_err(|e| ToolError::invalid_arguments(e.to_string()))
}

fn to_output<R: Serialize>(value: R) -> Result<Value, ToolError> {
    serde_json::to_value(value)
        .map_err(|e| ToolError::failed(format!("tool output is not serializable: {e}")))
}

/// The closures [`typed_tool`] accepts: `Fn(A) -> Fut` or `Fn(A, ToolContext) -> Fut`, `Fut`
/// resolving to `Result<R, ToolError>` with `R: Serialize`. `M` only tells the two shapes
/// apart; it is inferred.
pub trait TypedAsyncFn<A, M>: Send + Sync + 'static {
    /// Call with the parsed arguments and the call's context.
    fn call_typed(&self, args: A, cx: ToolContext) -> ToolFuture;
}

/// The closures [`typed_blocking_tool`] accepts: `Fn(A) -> Result<R, ToolError>` or
/// `Fn(A, ToolContext) -> Result<R, ToolError>`, `R: Serialize`. `M` only tells the two
/// shapes apart; it is inferred.
pub trait TypedBlockingFn<A, M>: Send + Sync + 'static {
    /// Call with the parsed arguments and the call's context (on a blocking thread).
    fn call_typed(&self, args: A, cx: ToolContext) -> Result<Value, ToolError>;
}

/// Marks a typed tool closure without the context argument.
#[doc(hidden)]
pub struct ArgsOnly<R, Fut>(std::marker::PhantomData<fn() -> (R, Fut)>);

/// Marks a typed tool closure that takes the context as its second argument.
#[doc(hidden)]
pub struct ArgsAndContext<R, Fut>(std::marker::PhantomData<fn() -> (R, Fut)>);

impl<A, R, Fut, F> TypedAsyncFn<A, ArgsOnly<R, Fut>> for F
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, ToolError>> + Send + 'static,
    R: Serialize + 'static,
{
    fn call_typed(&self, args: A, _cx: ToolContext) -> ToolFuture {
        let future = self(args);
        Box::pin(async move { to_output(future.await?) })
    }
}

impl<A, R, Fut, F> TypedAsyncFn<A, ArgsAndContext<R, Fut>> for F
where
    F: Fn(A, ToolContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, ToolError>> + Send + 'static,
    R: Serialize + 'static,
{
    fn call_typed(&self, args: A, cx: ToolContext) -> ToolFuture {
        let future = self(args, cx);
        Box::pin(async move { to_output(future.await?) })
    }
}

impl<A, R, F> TypedBlockingFn<A, ArgsOnly<R, ()>> for F
where
    F: Fn(A) -> Result<R, ToolError> + Send + Sync + 'static,
    R: Serialize + 'static,
{
    fn call_typed(&self, args: A, _cx: ToolContext) -> Result<Value, ToolError> {
        self(args).and_then(to_output)
    }
}

impl<A, R, F> TypedBlockingFn<A, ArgsAndContext<R, ()>> for F
where
    F: Fn(A, ToolContext) -> Result<R, ToolError> + Send + Sync + 'static,
    R: Serialize + 'static,
{
    fn call_typed(&self, args: A, cx: ToolContext) -> Result<Value, ToolError> {
        self(args, cx).and_then(to_output)
    }
}

/// A tool from an async closure over typed arguments; the schema is derived from `A`. The
/// closure may take the call's [`ToolContext`] as a second argument.
///
/// Arguments that do not deserialize into `A` give [`ToolErrorKind::InvalidArguments`].
/// `?` works on any error with a `From` into [`ToolError`] (I/O, JSON, parse errors,
/// `String`, boxed errors).
///
/// ```
/// use agent_core::tool::{typed_tool, Tool, ToolContext, ToolError};
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Path { path: String }
/// let size = typed_tool("size", "Size of a file in bytes", |args: Path| async move {
///     Ok::<_, ToolError>(std::fs::metadata(&args.path)?.len())
/// });
/// let who = typed_tool("who", "This call's id", |_: Path, cx: ToolContext| async move {
///     Ok::<_, ToolError>(cx.call_id)
/// });
/// assert_eq!((size.definition().name.as_str(), who.definition().name.as_str()), ("size", "who"));
/// ```
pub fn typed_tool<A, M, F>(name: impl Into<String>, description: impl Into<String>, f: F) -> FnTool
where
    A: DeserializeOwned + schemars::JsonSchema + Send + 'static,
    F: TypedAsyncFn<A, M>,
{
    let f = Arc::new(f);
    FnTool {
        definition: definition(name, description, schema_for::<A>()),
        requires_approval: false,
        call: Box::new(move |args, cx| match parse_arguments::<A>(args) {
            Ok(args) => f.call_typed(args, cx),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }),
    }
}

/// A tool from a synchronous closure over typed arguments, run on the blocking pool. The
/// closure may take the call's [`ToolContext`] as a second argument, and check
/// [`ToolContext::is_cancelled`] to stop early once the run gave the call up.
///
/// ```
/// use agent_core::tool::{typed_blocking_tool, Tool, ToolContext, ToolError};
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Count { to: u64 }
/// let count = typed_blocking_tool("count", "Count slowly", |args: Count, cx: ToolContext| {
///     let mut n = 0;
///     while n < args.to && !cx.is_cancelled() {
///         n += 1;
///     }
///     Ok::<_, ToolError>(n)
/// });
/// assert_eq!(count.definition().name, "count");
/// ```
pub fn typed_blocking_tool<A, M, F>(
    name: impl Into<String>,
    description: impl Into<String>,
    f: F,
) -> FnTool
where
    A: DeserializeOwned + schemars::JsonSchema + Send + 'static,
    F: TypedBlockingFn<A, M>,
{
    let f = Arc::new(f);
    FnTool {
        definition: definition(name, description, schema_for::<A>()),
        requires_approval: false,
        call: Box::new(move |args, cx| {
            let f = f.clone();
            Box::pin(async move {
                let args = parse_arguments::<A>(args)?;
                let runtime = cx.runtime.clone();
                let handle = runtime::blocking(&*runtime, move || f.call_typed(args, cx));
                handle.await?
            })
        }),
    }
}

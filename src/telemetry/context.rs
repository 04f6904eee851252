//! The execution context the orchestrator hands the agent (which test run,
//! which task, which request chain). Once set it is stamped on every log
//! line until it is cleared.

use std::sync::RwLock;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionContext {
    pub execution_id: Option<String>,
    pub task_id: Option<String>,
    pub correlation_id: Option<String>,
}

static CURRENT: RwLock<Option<ExecutionContext>> = RwLock::new(None);

/// Makes `ctx` the context stamped on all telemetry from now on.
pub fn set(ctx: ExecutionContext) {
    if let Ok(mut cur) = CURRENT.write() {
        *cur = Some(ctx);
    }
}

pub fn clear() {
    if let Ok(mut cur) = CURRENT.write() {
        *cur = None;
    }
}

pub fn current() -> ExecutionContext {
    CURRENT
        .read()
        .ok()
        .and_then(|c| c.clone())
        .unwrap_or_default()
}

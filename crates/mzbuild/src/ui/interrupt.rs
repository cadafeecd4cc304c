//! The document a `--json` run prints when a signal stops it. A command
//! registers how to render its document so far ([`on_interrupt`]); the
//! signal handler prints it ([`print_interrupted`]); the run's normal end
//! prints its own through [`emit`]. Both take the registration under one
//! lock, so a run prints exactly one document, whichever comes first. It
//! lives in `ui` (a leaf) so that the signal handler, below every stage,
//! can reach it; what the document says is `report`'s business.

use std::sync::Mutex;

type Render = Box<dyn Fn() -> String + Send>;

static PENDING: Mutex<Option<Render>> = Mutex::new(None);

fn pending() -> std::sync::MutexGuard<'static, Option<Render>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// On a signal, print `render()`. Replaces an earlier registration.
pub fn on_interrupt(render: impl Fn() -> String + Send + 'static) {
    *pending() = Some(Box::new(render));
}

/// Print the run's document (and forget the registration: the signal
/// handler prints nothing after it).
pub fn emit(text: &str) {
    let mut p = pending();
    *p = None;
    super::result(text);
}

/// For the signal handler: print the registered document, if any, and
/// forget it.
pub fn print_interrupted() {
    let mut p = pending();
    if let Some(render) = p.take() {
        super::result(&render());
    }
}

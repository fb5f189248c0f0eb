//! The HTTP clients of one remote: one per tokio runtime that sends its
//! requests.
//!
//! Why: a reqwest client runs each connection as a task on the runtime of the
//! request that opened it, and hands the connection to any later request,
//! whatever runtime runs that one. A FUSE thread's reads run on a
//! current-thread runtime of the thread's own (`PanFs::block_on_here`), so a
//! request, its socket and its answer never leave that thread: handed to the
//! shared runtime's threads and back, a 256 KiB block cost twice what the
//! request itself did. A connection opened there makes progress only while its
//! thread waits in that runtime, so a request from another runtime must never
//! get it. Each current-thread runtime therefore gets a client of its own,
//! kept by its thread; every other runtime uses the shared client.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};

/// How long a thread's own client keeps an idle connection. Nothing watches
/// it between that thread's requests, so it is let go well before a server
/// would close it.
const OWN_IDLE: Duration = Duration::from_secs(10);

thread_local! {
    /// This thread's own client: for which `Clients` and which runtime.
    static OWN: RefCell<Option<(u64, tokio::runtime::Id, reqwest::Client)>> =
        const { RefCell::new(None) };
}

/// Tells the clients of different remotes apart in `OWN`.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

pub struct Clients {
    id: u64,
    timeout: Duration,
    shared: reqwest::Client,
}

fn build(timeout: Duration, idle: Option<Duration>) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_max_idle_per_host(32);
    match idle {
        Some(idle) => builder.pool_idle_timeout(idle),
        None => builder,
    }
    .build()
}

impl Clients {
    /// Clients whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> reqwest::Result<Self> {
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            timeout,
            shared: build(timeout, None)?,
        })
    }

    /// The client for a request run on the current runtime.
    pub fn current(&self) -> reqwest::Client {
        let rt = match Handle::try_current() {
            Ok(h) if h.runtime_flavor() == RuntimeFlavor::CurrentThread => h.id(),
            _ => return self.shared.clone(),
        };
        OWN.with_borrow_mut(|own| {
            if let Some((id, at, client)) = own.as_ref()
                && (*id, *at) == (self.id, rt)
            {
                return client.clone();
            }
            match build(self.timeout, Some(OWN_IDLE)) {
                Ok(client) => {
                    *own = Some((self.id, rt, client.clone()));
                    client
                }
                Err(e) => {
                    // The shared client was built with the same settings, so
                    // this does not happen; were it to, a request still goes.
                    tracing::warn!(error = %e, "could not make a thread's own HTTP client");
                    self.shared.clone()
                }
            }
        })
    }
}

//! SIGINT and SIGTERM as one future that listens from the moment it is made.
//!
//! Until a process installs a handler, SIGTERM keeps its default action: the kernel ends the
//! process at once, with no drain and no exit status of its own. Tokio installs the handler
//! when a listener is created, not when a future that would create one is first polled, so a
//! program that announces "ready" and only then starts listening leaves a window in which a
//! supervisor's (or a test's) SIGTERM kills it outright. Every long-running command of the
//! broker binary therefore makes a [`ShutdownSignal`] before it binds or announces anything and
//! awaits [`ShutdownSignal::recv`] when it is ready to stop (or, where several places wait,
//! [`ShutdownSignal::into_token`]).

use tokio_util::sync::CancellationToken;

/// Listens for SIGINT (Ctrl-C) and SIGTERM; [`ShutdownSignal::recv`] completes on the first.
pub struct ShutdownSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Starts listening now. Must be called inside a Tokio runtime with its I/O driver enabled;
    /// fails only if the process cannot install a signal handler.
    pub fn listen() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Completes when SIGINT or SIGTERM arrives (including one that arrived since
    /// [`ShutdownSignal::listen`]) and logs which it was.
    pub async fn recv(self) {
        #[cfg(unix)]
        {
            let Self {
                mut interrupt,
                mut terminate,
            } = self;
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }

    /// A token cancelled on the first SIGINT or SIGTERM (a task spawned on the current runtime
    /// waits for it), for programs where several places wait for the signal.
    pub fn into_token(self) -> CancellationToken {
        let token = CancellationToken::new();
        let cancel = token.clone();
        tokio::spawn(async move {
            self.recv().await;
            cancel.cancel();
        });
        token
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use nix::sys::signal::{Signal, raise};
    use std::time::Duration;

    /// A signal that arrives after `listen` but before `recv` is first polled is caught, not
    /// left to the default action (which would end this test process: the test cannot pass
    /// by accident).
    #[tokio::test]
    async fn a_signal_between_listen_and_the_first_poll_is_caught() {
        for sig in [Signal::SIGTERM, Signal::SIGINT] {
            let signal = ShutdownSignal::listen().expect("install the handlers");
            raise(sig).expect("raise");
            tokio::time::timeout(Duration::from_secs(10), signal.recv())
                .await
                .unwrap_or_else(|_| panic!("{sig} not seen by recv"));
        }
    }
}

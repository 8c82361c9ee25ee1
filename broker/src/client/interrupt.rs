//! Ctrl-C (SIGINT) and SIGTERM for `broker client`, listened for from the client's start.
//!
//! The client stops cleanly on either: in a session it logs out and closes as after `quit`,
//! while connecting, logging in or pausing before the next login it simply ends, and the exit
//! status is 0 in every case. One listener made before the first connection keeps a signal that
//! arrives while the client is busy elsewhere (connecting, sending) from being lost or from
//! ending the process through the signal's default action.

use tokio_util::sync::CancellationToken;

use crate::shutdown_signal::ShutdownSignal;

/// Whether Ctrl-C or SIGTERM has arrived; cheap to clone (every clone sees the same signal).
#[derive(Clone, Debug)]
pub struct Interrupt(CancellationToken);

impl Interrupt {
    /// Starts listening now (inside the client's runtime); fails only if the process cannot
    /// install a signal handler.
    pub fn listen() -> std::io::Result<Interrupt> {
        let signal = ShutdownSignal::listen()?;
        let token = CancellationToken::new();
        let seen = token.clone();
        tokio::spawn(async move {
            signal.recv().await;
            seen.cancel();
        });
        Ok(Interrupt(token))
    }

    /// Completes once a signal has arrived (at once if one already has).
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }
}

//! `[udp]`: the device UDP socket's kernel buffers. Loaded once with the rest of the
//! configuration and applied by [`super::serve`] when the endpoint starts, which logs and meters
//! what the kernel really gave (`broker_udp_socket_buffer_bytes`).

use serde::{Deserialize, Serialize};

/// Smallest buffer size accepted (other than 0, the kernel's default).
pub const MIN_BUFFER_BYTES: usize = 4096;
/// Largest buffer size accepted.
pub const MAX_BUFFER_BYTES: usize = 1 << 30;

/// `[udp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UdpConfig {
    /// Receive buffer of the device UDP socket in bytes (`SO_RCVBUF`); 0 keeps the kernel's
    /// default. Datagrams arriving while it is full are dropped by the kernel and counted in
    /// `broker_udp_kernel_drops_total`.
    pub receive_buffer_bytes: usize,
    /// Send buffer of the device UDP socket in bytes (`SO_SNDBUF`); 0 keeps the kernel's default.
    pub send_buffer_bytes: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            receive_buffer_bytes: 4 << 20,
            send_buffer_bytes: 1 << 20,
        }
    }
}

impl UdpConfig {
    /// Checks the sizes; `Err` names the offending key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (key, v) in [
            ("udp.receive_buffer_bytes", self.receive_buffer_bytes),
            ("udp.send_buffer_bytes", self.send_buffer_bytes),
        ] {
            if v != 0 && !(MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&v) {
                return Err((
                    key.to_owned(),
                    format!(
                        "must be 0 (the kernel's default) or between {MIN_BUFFER_BYTES} and {MAX_BUFFER_BYTES}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_outside_the_range_are_refused_naming_the_key() {
        assert_eq!(UdpConfig::default().validate(), Ok(()));
        let zero = UdpConfig {
            receive_buffer_bytes: 0,
            send_buffer_bytes: 0,
        };
        assert_eq!(zero.validate(), Ok(()));
        let tiny = UdpConfig {
            receive_buffer_bytes: 100,
            ..UdpConfig::default()
        };
        assert_eq!(tiny.validate().unwrap_err().0, "udp.receive_buffer_bytes");
        let huge = UdpConfig {
            send_buffer_bytes: MAX_BUFFER_BYTES + 1,
            ..UdpConfig::default()
        };
        assert_eq!(huge.validate().unwrap_err().0, "udp.send_buffer_bytes");
    }
}

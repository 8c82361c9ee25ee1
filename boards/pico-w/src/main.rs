//! The plug firmware on a Raspberry Pi Pico W (RP2040, dual Cortex-M0+ at 125 MHz).
//!
//! Board-specific part only: the CYW43439 Wi-Fi chip (PIO-driven SPI, firmware blob from the
//! `cyw43-firmware` crate, WPA2 join with build-time credentials), ROSC random bits and the
//! embassy-net stack with DHCP. From there on it runs exactly what the virtual boards run,
//! through `plug_app::start` (the firmware SDK's client over UDP/WebSocket and the plug app).
//!
//! Pins:
//!
//! | function | pin | where |
//! |---|---|---|
//! | relay (active high) | GP15 | header pin 20 |
//! | status LED: relay state (active high, with a resistor) | GP14 | header pin 19 |
//! | on-board LED: network up | CYW43 GPIO 0 | on board (driven through the radio) |
//! | CYW43439 SPI | GP23 power, GP24 data, GP25 chip select, GP29 clock (PIO0 SM0, DMA 0) | on board |
//!
//! Provisioning: the device id, key and brokers are read at boot from the record in the last
//! flash page ([`record_region`]), so one image serves every plug; a missing or bad record
//! logs the error and the board stays offline (Wi-Fi never powered). The Wi-Fi network is a
//! site setting given at build time: `PLUG_WIFI_SSID` and `PLUG_WIFI_PASSWORD` (empty or unset:
//! an open network). Logs are defmt over RTT through an SWD probe, see docs/flashing.md.
//!
//! Recovery: once the record is accepted the watchdog runs ([`WATCHDOG_MS`]) and is fed while
//! the SDK's runner keeps its `Liveness` promise (`plug_app::watchdog`), so a hung network task
//! resets the board. Faults and panics reset it too ([`fault`]). The reason of each boot
//! (`plug_app::reset::ResetReason`) is logged first thing and uploaded once as the boot report.
//! A lost Wi-Fi link (access point gone, out of range) is joined again with the SDK's full-jitter
//! backoff ([`JOIN_BACKOFF`]); the client meanwhile reconnects on its own once the link is back.
//!
//! Persistence: the boot counter and the client's since_id live in the four flash sectors
//! before the record's ([`PERSIST_AREA`], `plug_app::persist`): the boot is counted before the
//! radio starts, the stored since_id is reported at the first login, and a grown since_id is
//! written at most every 10 minutes (1 minute after a session ended) by a task of its own.
#![no_std]
#![no_main]

mod fault;
mod record_region;

use cyw43::JoinOptions;
use cyw43_pio::{DEFAULT_CLOCK_DIVIDER, PioSpi};
use defmt::{info, unwrap, warn};
use embassy_executor::Spawner;
use embassy_net::StackResources;
use embassy_rp::bind_interrupts;
use embassy_rp::clocks::RoscRng;
use embassy_rp::flash::{Async, Flash};
use embassy_rp::gpio::{Level, Output};
use embassy_rp::peripherals::{DMA_CH0, FLASH, PIO0};
use embassy_rp::pio::{InterruptHandler, Pio};
use embassy_rp::watchdog::Watchdog;
use embassy_time::{Duration, Timer};
use firmware::backoff::{Backoff, BackoffConfig};
use firmware::net::Liveness;
use plug_app::app::{AppConfig, AppMemory};
use plug_app::persist::{self, Resume, SinceFeed, SincePolicy, Store};
use plug_app::record;
use plug_app::relay::{GpioRelay, Polarity};
use plug_app::watchdog::{Feed, feed_while_alive};
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

/// Bytes of the Pico W's QSPI flash (W25Q16JV).
const FLASH_SIZE: usize = 2 * 1024 * 1024;
/// The persistent area (boot counter, since_id; `plug_app::persist`): the four 4 KiB sectors
/// before the record's (`0x101F_B000..0x101F_F000`), offsets from the flash base; memory.x
/// ends the image before them.
const PERSIST_AREA: core::ops::Range<u32> = 0x1F_B000..0x1F_F000;
/// The flash driver the area is kept with.
type BoardFlash = Flash<'static, FLASH, Async, FLASH_SIZE>;

/// The plug task's since_id and session ends, read by the persistence task.
static SINCE: SinceFeed = SinceFeed::new();

/// Writes since_id now and then. Erasing a 4 KiB sector stalls the whole chip (execute-in-place
/// is off while the flash works) for about 45 ms (400 ms at most, W25Q16JV datasheet), once per
/// about 230 writes.
#[embassy_executor::task]
async fn persist_task(store: &'static mut Store<BoardFlash>, policy: SincePolicy) -> ! {
    persist::keep_since(store, &SINCE, policy).await
}

bind_interrupts!(struct Irqs {
    PIO0_IRQ_0 => InterruptHandler<PIO0>;
});

/// Interval of `power` uploads.
const METER_INTERVAL_MS: u64 = 60_000;
/// Sockets the stack holds: the application's (UDP, WebSocket, node lookup) and DHCP's.
const SOCKETS: usize = plug_app::app::stack_sockets(true);
/// Delays between Wi-Fi joins: after the `n`-th failure in a row, uniform in
/// `0..=min(60 s, 2 s * 2^n)`; a join that succeeds starts over.
const JOIN_BACKOFF: BackoffConfig = BackoffConfig {
    base_ms: 2_000,
    cap_ms: 60_000,
};
/// Watchdog timeout (the RP2040's counter holds at most about 8.3 s).
const WATCHDOG_MS: u64 = 8_000;
/// How often the watchdog task looks at the runner's promise.
const FEED_PERIOD_MS: u64 = 1_000;

/// The client runner's promise, read by the watchdog task.
static LIVENESS: Liveness = Liveness::new();

/// The Wi-Fi network, from the build environment; a build without an SSID fails here.
const WIFI_SSID: &str = match option_env!("PLUG_WIFI_SSID") {
    Some(ssid) if !ssid.is_empty() && ssid.len() <= 32 => ssid,
    _ => panic!("PLUG_WIFI_SSID must be set (1 to 32 bytes) to build the Pico W firmware"),
};
/// The network's WPA2 passphrase; empty joins an open network.
const WIFI_PASSWORD: &str = match option_env!("PLUG_WIFI_PASSWORD") {
    Some(password) => password,
    None => "",
};

/// The SPI link to the radio.
type RadioSpi = PioSpi<'static, PIO0, 0, DMA_CH0>;

/// The client's randomness: random bits of the ring oscillator.
struct HwRng(RoscRng);

impl firmware::rng::Rng for HwRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
}

/// The RP2040 watchdog, fed through `plug_app::watchdog`.
struct Wdt(Watchdog);

impl Feed for Wdt {
    fn feed(&mut self) {
        self.0.feed();
    }
}

#[embassy_executor::task]
async fn watchdog_task(watchdog: Wdt) -> ! {
    feed_while_alive(watchdog, &LIVENESS, FEED_PERIOD_MS).await
}

#[embassy_executor::task]
async fn radio_task(runner: cyw43::Runner<'static, Output<'static>, RadioSpi>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, cyw43::NetDriver<'static>>) -> ! {
    runner.run().await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_rp::init(Default::default());
    let reset = fault::take_reset_reason();
    info!("reset reason {=str}", reset.as_str());
    let region = record_region::record_region();
    let Some(provisioning) =
        record::accept_at_boot(region, record_region::RECORD_ADDR).map(|p| p.provisioning)
    else {
        // Safe state: the radio stays off, no login.
        loop {
            Timer::after_secs(3600).await;
        }
    };
    info!(
        "pico-w: plug firmware {}, device {}",
        env!("CARGO_PKG_VERSION"),
        provisioning.device_id
    );

    let mut watchdog = Watchdog::new(p.WATCHDOG);
    watchdog.start(Duration::from_millis(WATCHDOG_MS));

    // Count this boot and read since_id before the network starts. This board draws its
    // nonces from the ring oscillator, so a failing area only costs since_id.
    let flash = BoardFlash::new(p.FLASH, p.DMA_CH1);
    let resume = Resume::from_boot(Store::open_and_begin_boot(flash, PERSIST_AREA, 0).await);
    spawner.spawn(unwrap!(watchdog_task(Wdt(watchdog))));

    static RELAY: StaticCell<GpioRelay<Output<'static>, Output<'static>>> = StaticCell::new();
    let relay = RELAY.init(GpioRelay::new(
        Output::new(p.PIN_15, Level::Low),
        Polarity::ActiveHigh,
        Some((Output::new(p.PIN_14, Level::Low), Polarity::ActiveHigh)),
    ));

    static RNG_CELL: StaticCell<HwRng> = StaticCell::new();
    let rng = RNG_CELL.init(HwRng(RoscRng));
    let net_seed = rng.0.next_u64();

    // The radio: power pin, PIO SPI, firmware upload, then the country matrix (CLM).
    let pwr = Output::new(p.PIN_23, Level::Low);
    let cs = Output::new(p.PIN_25, Level::High);
    let mut pio = Pio::new(p.PIO0, Irqs);
    let spi = PioSpi::new(
        &mut pio.common,
        pio.sm0,
        DEFAULT_CLOCK_DIVIDER,
        pio.irq0,
        cs,
        p.PIN_24,
        p.PIN_29,
        p.DMA_CH0,
    );
    static RADIO: StaticCell<cyw43::State> = StaticCell::new();
    let (device, mut control, radio_runner) = cyw43::new(
        RADIO.init(cyw43::State::new()),
        pwr,
        spi,
        cyw43_firmware::CYW43_43439A0,
    )
    .await;
    spawner.spawn(unwrap!(radio_task(radio_runner)));
    control.init(cyw43_firmware::CYW43_43439A0_CLM).await;
    control
        .set_power_management(cyw43::PowerManagementMode::PowerSave)
        .await;

    static STACK: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        embassy_net::Config::dhcpv4(Default::default()),
        STACK.init(StackResources::new()),
        net_seed,
    );
    spawner.spawn(unwrap!(net_task(runner)));

    static APP: StaticCell<AppMemory> = StaticCell::new();
    unwrap!(plug_app::start(
        spawner,
        stack,
        APP.init(AppMemory::new()),
        &provisioning,
        relay,
        rng,
        AppConfig {
            firmware_version: env!("CARGO_PKG_VERSION"),
            meter_interval_ms: METER_INTERVAL_MS,
            liveness: Some(&LIVENESS),
            reset_reason: Some(reset.as_str()),
            since_id: resume.since_id,
            since_feed: resume.since_feed(&SINCE),
        },
    ));
    if let Some((store, policy)) = resume.keeper() {
        static STORE: StaticCell<Store<BoardFlash>> = StaticCell::new();
        spawner.spawn(unwrap!(persist_task(STORE.init(store), policy)));
    }

    let options = if WIFI_PASSWORD.is_empty() {
        JoinOptions::new_open()
    } else {
        JoinOptions::new(WIFI_PASSWORD.as_bytes())
    };
    let mut jitter = HwRng(RoscRng);
    let mut backoff = Backoff::new(JOIN_BACKOFF);
    let mut first = true;
    loop {
        info!("joining Wi-Fi network {}", WIFI_SSID);
        if let Err(e) = control.join(WIFI_SSID, options.clone()).await {
            let delay = backoff.next_delay_ms(&mut jitter);
            warn!(
                "Wi-Fi join failed (status {}, {} in a row); next try in {} ms",
                e.status,
                backoff.failures(),
                delay
            );
            Timer::after_millis(u64::from(delay)).await;
            continue;
        }
        backoff.reset();
        stack.wait_link_up().await;
        if first {
            info!("waiting for a DHCP lease");
            stack.wait_config_up().await;
            if let Some(config) = stack.config_v4() {
                info!("network up: {}", config.address);
            }
            first = false;
        }
        control.gpio_set(0, true).await;
        stack.wait_link_down().await;
        warn!("Wi-Fi link lost; joining again");
        control.gpio_set(0, false).await;
    }
}

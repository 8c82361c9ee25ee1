//! The plug firmware on an ST Nucleo-F429ZI (STM32F429ZI, Cortex-M4F at 168 MHz).
//!
//! Board-specific part only: clocks, pins, the on-board Ethernet (MAC + LAN8742A PHY over RMII,
//! auto-negotiation by the HAL's generic PHY driver), the hardware RNG and the embassy-net
//! stack with DHCP. From there on it runs exactly what the virtual boards run, through
//! `plug_app::start` (the firmware SDK's client over UDP/WebSocket and the plug application).
//!
//! Pins (Nucleo-144 user manual UM1974):
//!
//! | function | pin | where |
//! |---|---|---|
//! | relay (active high) | PF13 | CN10 / Arduino D7 |
//! | LD2 blue: relay state | PB7 | on board |
//! | LD1 green: network up (DHCP lease; off while the link is down) | PB0 | on board |
//! | Ethernet RMII | PA1 REF_CLK, PA7 CRS_DV, PC4 RXD0, PC5 RXD1, PG13 TXD0, PB13 TXD1, PG11 TX_EN | on board (solder bridges as shipped) |
//! | PHY management | PA2 MDIO, PC1 MDC | on board |
//!
//! Provisioning (device id, key, brokers) is read at boot from the record in the last flash
//! sector ([`record_region`]), so one image serves every plug; a missing or bad record logs
//! the error and the board stays offline, LD1 blinking slowly. Logs are defmt over RTT (the
//! ST-LINK probe), see docs/flashing.md.
//!
//! Persistence: the boot counter and the client's since_id live in flash sectors 21-22
//! ([`PERSIST_AREA`], `plug_app::persist`): the boot is counted before the network starts,
//! the stored since_id is reported at the first login, and a grown since_id is written at most
//! every 10 minutes (1 minute after a session ended) by a task of its own.
//!
//! Recovery: once the record is accepted the independent watchdog runs ([`WATCHDOG_MS`]) and
//! is fed while the SDK's runner keeps its `Liveness` promise (`plug_app::watchdog`), so a hung
//! network task resets the board. Faults and panics reset it too ([`fault`]). The reason of each
//! boot (`plug_app::reset::ResetReason`) is logged first thing and uploaded once as the boot
//! report.
#![no_std]
#![no_main]

mod fault;
mod record_region;

use defmt::{info, unwrap, warn};
use embassy_executor::Spawner;
use embassy_net::StackResources;
use embassy_stm32::bind_interrupts;
use embassy_stm32::eth::{self, Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::flash::{self, Async, Flash};
use embassy_stm32::gpio::{Level, Output, Speed};
use embassy_stm32::peripherals::{ETH, ETH_SMA, IWDG, RNG};
use embassy_stm32::rng::{self, Rng};
use embassy_stm32::time::Hertz;
use embassy_stm32::wdg::IndependentWatchdog;
use embassy_time::Timer;
use firmware::net::Liveness;
use plug_app::app::{AppConfig, AppMemory};
use plug_app::persist::{self, Resume, SinceFeed, SincePolicy, Store};
use plug_app::record;
use plug_app::relay::{GpioRelay, Polarity};
use plug_app::watchdog::{Feed, feed_while_alive};
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    HASH_RNG => rng::InterruptHandler<RNG>;
    FLASH => flash::InterruptHandler;
});

/// The persistent area (boot counter, since_id; `plug_app::persist`): flash sectors 21 and 22
/// (2 x 128 KiB at `0x081A_0000`), offsets from the flash base. Both are in bank 2, the image
/// in bank 1 (memory.x ends it before them), so the CPU keeps running from bank 1 while a
/// sector of bank 2 is erased (1-2 s) and the async driver lets the network task run.
const PERSIST_AREA: core::ops::Range<u32> = 0x1A_0000..0x1E_0000;

/// The plug task's since_id and session ends, read by the persistence task.
static SINCE: SinceFeed = SinceFeed::new();

#[embassy_executor::task]
async fn persist_task(store: &'static mut Store<Flash<'static, Async>>, policy: SincePolicy) -> ! {
    persist::keep_since(store, &SINCE, policy).await
}

/// The Ethernet driver type (MAC + generic PHY on the SMI bus).
type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

/// Interval of `power` uploads.
const METER_INTERVAL_MS: u64 = 60_000;
/// Sockets the stack holds: the application's (UDP, WebSocket, node lookup) and DHCP's.
const SOCKETS: usize = plug_app::app::stack_sockets(true);

/// Watchdog timeout: the board resets this long after the feeding stops (the IWDG runs on the
/// 32 kHz LSI, which may be off by some percent).
const WATCHDOG_MS: u32 = 8_000;
/// How often the watchdog task looks at the runner's promise.
const FEED_PERIOD_MS: u64 = 1_000;

/// The client runner's promise, read by the watchdog task.
static LIVENESS: Liveness = Liveness::new();

/// The independent watchdog, fed through `plug_app::watchdog`.
struct Iwdg(IndependentWatchdog<'static, IWDG>);

impl Feed for Iwdg {
    fn feed(&mut self) {
        self.0.pet();
    }
}

#[embassy_executor::task]
async fn watchdog_task(watchdog: Iwdg) -> ! {
    feed_while_alive(watchdog, &LIVENESS, FEED_PERIOD_MS).await
}

/// The client's randomness: the STM32 true RNG.
struct HwRng(Rng<'static, RNG>);

impl firmware::rng::Rng for HwRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Device>) -> ! {
    runner.run().await
}

/// 168 MHz from the ST-LINK's 8 MHz clock (HSE bypass), 48 MHz for the RNG from PLL Q.
fn clocks() -> embassy_stm32::Config {
    use embassy_stm32::rcc::*;
    let mut config = embassy_stm32::Config::default();
    config.rcc.hse = Some(Hse {
        freq: Hertz(8_000_000),
        mode: HseMode::Bypass,
    });
    config.rcc.pll_src = PllSource::HSE;
    config.rcc.pll = Some(Pll {
        prediv: PllPreDiv::DIV4,
        mul: PllMul::MUL168,
        divp: Some(PllPDiv::DIV2),
        divq: Some(PllQDiv::DIV7),
        divr: None,
    });
    config.rcc.ahb_pre = AHBPrescaler::DIV1;
    config.rcc.apb1_pre = APBPrescaler::DIV4;
    config.rcc.apb2_pre = APBPrescaler::DIV2;
    config.rcc.sys = Sysclk::PLL1_P;
    config
}

/// A locally administered unicast MAC derived from the chip's 96-bit unique id.
fn mac_address() -> [u8; 6] {
    let uid = embassy_stm32::uid::uid();
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    for (i, byte) in uid.iter().enumerate() {
        mac[1 + i % 5] ^= byte.rotate_left(i as u32 / 5);
    }
    mac
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(clocks());
    let reset = fault::take_reset_reason();
    info!("reset reason {=str}", reset.as_str());
    let mut net_led = Output::new(p.PB0, Level::Low, Speed::Low);
    let region = record_region::record_region();
    let Some(provisioning) =
        record::accept_at_boot(region, record_region::RECORD_ADDR).map(|p| p.provisioning)
    else {
        // Safe state: no network, no login; LD1 blinks slowly.
        loop {
            net_led.toggle();
            Timer::after_millis(1000).await;
        }
    };
    info!(
        "nucleo-f429zi: plug firmware {}, device {}",
        env!("CARGO_PKG_VERSION"),
        provisioning.device_id
    );

    // Count this boot and read since_id before the network starts. This board draws its
    // nonces from the hardware RNG, so a failing area only costs since_id.
    let flash = Flash::new(p.FLASH, Irqs);
    let resume = Resume::from_boot(Store::open_and_begin_boot(flash, PERSIST_AREA, 0).await);

    let mut watchdog = IndependentWatchdog::new(p.IWDG, WATCHDOG_MS * 1_000);
    watchdog.unleash();
    spawner.spawn(unwrap!(watchdog_task(Iwdg(watchdog))));

    static RELAY: StaticCell<GpioRelay<Output<'static>, Output<'static>>> = StaticCell::new();
    let relay = RELAY.init(GpioRelay::new(
        Output::new(p.PF13, Level::Low, Speed::Low),
        Polarity::ActiveHigh,
        Some((
            Output::new(p.PB7, Level::Low, Speed::Low),
            Polarity::ActiveHigh,
        )),
    ));

    static RNG_CELL: StaticCell<HwRng> = StaticCell::new();
    let rng = RNG_CELL.init(HwRng(Rng::new(p.RNG, Irqs)));
    let net_seed = rng.0.next_u64();

    static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
    let device = Ethernet::new(
        PACKETS.init(PacketQueue::new()),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB13,
        p.PG11,
        mac_address(),
        p.ETH_SMA,
        p.PA2,
        p.PC1,
    );

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
        static STORE: StaticCell<Store<Flash<'static, Async>>> = StaticCell::new();
        spawner.spawn(unwrap!(persist_task(STORE.init(store), policy)));
    }

    info!("waiting for the Ethernet link and a DHCP lease");
    stack.wait_config_up().await;
    if let Some(config) = stack.config_v4() {
        info!("network up: {}", config.address);
    }
    net_led.set_high();
    // A lost link (cable pulled, switch down) is logged and shown on LD1. embassy-net keeps
    // polling the PHY and asks for a new DHCP lease when the link returns; meanwhile the
    // client's connections fail and it retries with its full-jitter backoff.
    loop {
        stack.wait_link_down().await;
        warn!("Ethernet link lost; waiting for it to come back");
        net_led.set_low();
        stack.wait_link_up().await;
        info!("Ethernet link back; waiting for a DHCP lease");
        stack.wait_config_up().await;
        if let Some(config) = stack.config_v4() {
            info!("network up again: {}", config.address);
        }
        net_led.set_high();
    }
}

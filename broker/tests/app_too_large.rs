//! An app message over `MAX_JSON_MESSAGE` (docs/protocol.md section 7.1): the app gets `error`
//! `TOO_LARGE` and then the close 1009, every time, whatever the message's size beyond the limit.

use crate::comet_support;

use broker::terminal::IdProfile;
use comet_support::*;
use futures_util::StreamExt;
use shared_protocol::codes::Code;
use shared_protocol::ids::Address;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Every message until the close: (texts, close code).
async fn until_close(app: &mut App) -> (Vec<serde_json::Value>, Option<u16>) {
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, app.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => texts.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(c)))) => {
                return (texts, c.map(|c| u16::from(c.code)));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("connection failed before the close frame: {e} ({texts:?})"),
            Ok(None) => return (texts, None),
            Err(_) => panic!("no close within {WAIT:?} ({texts:?})"),
        }
    }
}

#[tokio::test]
async fn an_oversized_app_message_gets_error_too_large_then_close_1009_every_time() {
    let b = TestBroker::start(IdProfile::Plug).await;
    for (round, size) in [
        4097usize, 4097, 4097, 4097, 4097, 5000, 9000, 70_000, 4097, 4097,
    ]
    .into_iter()
    .enumerate()
    {
        let (mut phone, welcome) = App::login(&b.app_ws(), Address::phone(9), 0).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let pad = "x".repeat(size - r#"{"type":"ping","pad":""}"#.len());
        let big = format!(r#"{{"type":"ping","pad":"{pad}"}}"#);
        assert_eq!(big.len(), size);
        futures_util::SinkExt::send(&mut phone.ws, Message::Text(big.into()))
            .await
            .unwrap();
        let (texts, close) = until_close(&mut phone).await;
        let errors: Vec<_> = texts.iter().filter(|t| t["type"] == "error").collect();
        assert_eq!(
            errors.len(),
            1,
            "round {round} ({size} bytes): one error before the close: {texts:?}"
        );
        assert_eq!(errors[0]["code"], u64::from(Code::TOO_LARGE.0));
        assert_eq!(
            close,
            Some(u16::from(CloseCode::Size)),
            "round {round} ({size} bytes)"
        );
    }
    b.stop().await;
}

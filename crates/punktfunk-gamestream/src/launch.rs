//! Parameters of `/launch` and `/resume`: the session key the client chose, the mode it asks
//! for and its audio and gamepad setup. The host keeps them in a pending session that the
//! streaming side (RTSP) consumes.

use crate::http::Request;
use crate::xml::Reply;

/// What a client asked for when launching or resuming.
#[derive(Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    /// App to start (`/launch` only; 0 for `/resume`).
    pub app_id: u32,
    /// Requested width, height and refresh (the real encode parameters come with RTSP).
    pub mode: Option<(u32, u32, u32)>,
    /// `rikey`: the AES-128 session key for RTSP, control, audio and video encryption.
    pub rikey: [u8; 16],
    /// `rikeyid`: the key id (the audio IV base).
    pub rikey_id: i32,
    /// `localAudioPlayMode`: also play audio on the host.
    pub local_audio: bool,
    /// `surroundAudioInfo`: `(channel mask << 16) | channel count`; stereo when absent.
    pub surround_info: u32,
    /// `gcmap`: gamepads present at launch (bit mask).
    pub gamepad_mask: u32,
    /// `corever`: 1 means the client can do encrypted RTSP.
    pub core_version: u32,
    /// `sops`: let the host change its display mode.
    pub optimize_settings: bool,
    /// `hdrMode`.
    pub hdr: bool,
}

impl std::fmt::Debug for LaunchRequest {
    // The session key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaunchRequest")
            .field("app_id", &self.app_id)
            .field("mode", &self.mode)
            .field("rikey_id", &self.rikey_id)
            .field("local_audio", &self.local_audio)
            .field("surround_info", &format_args!("{:#x}", self.surround_info))
            .field("gamepad_mask", &self.gamepad_mask)
            .field("core_version", &self.core_version)
            .field("hdr", &self.hdr)
            .finish_non_exhaustive()
    }
}

/// Stereo: mask 0x3, 2 channels.
pub const SURROUND_STEREO: u32 = 0x30002;

impl LaunchRequest {
    /// Reads `/launch` (`resume == false`) or `/resume` parameters. The error is the XML reply
    /// (status 400 with what is wrong).
    pub fn parse(req: &Request, resume: bool) -> Result<LaunchRequest, Reply> {
        let bad = |m: String| Reply::error(400, &m);
        let rikey = req
            .param("rikey")
            .and_then(crate::hex_decode)
            .filter(|k| k.len() == 16)
            .ok_or_else(|| bad("rikey must be 32 hex digits".into()))?;
        let rikey_id: i32 = req
            .param("rikeyid")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("rikeyid must be a 32-bit integer".into()))?;
        let int = |name: &str, default: u32| -> Result<u32, Reply> {
            match req.param(name) {
                None | Some("") => Ok(default),
                // Clients print some masks as signed numbers.
                Some(v) => v
                    .parse::<u32>()
                    .or_else(|_| v.parse::<i32>().map(|x| x as u32))
                    .map_err(|_| bad(format!("{name} is not a number"))),
            }
        };
        let app_id = if resume {
            0
        } else {
            match req.param("appid").map(str::parse::<i64>) {
                Some(Ok(id)) if id > 0 && id <= i64::from(u32::MAX) => id as u32,
                Some(_) => return Err(bad("appid must be a positive integer".into())),
                None => return Err(bad("missing appid".into())),
            }
        };
        if !resume && req.param("localAudioPlayMode").is_none() {
            return Err(bad("missing localAudioPlayMode".into()));
        }
        let mode = match req.param("mode") {
            None => None,
            Some(m) => {
                Some(parse_mode(m).ok_or_else(|| bad(format!("mode {m:?} is not WxHxFPS")))?)
            }
        };
        Ok(LaunchRequest {
            app_id,
            mode,
            rikey: rikey.try_into().expect("length checked"),
            rikey_id,
            local_audio: int("localAudioPlayMode", 0)? != 0,
            surround_info: int("surroundAudioInfo", SURROUND_STEREO)?,
            gamepad_mask: int("gcmap", int("remoteControllersBitmap", 0)?)?,
            core_version: int("corever", 0)?,
            optimize_settings: int("sops", 0)? != 0,
            hdr: int("hdrMode", 0)? != 0,
        })
    }

    /// Audio channel count from `surroundAudioInfo`.
    pub fn channels(&self) -> u32 {
        self.surround_info & 0xFFFF
    }
}

/// `WxHxFPS` with sane bounds (FPS 0 is allowed: older clients send it for > 60 Hz).
pub fn parse_mode(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.split('x');
    let w: u32 = it.next()?.parse().ok()?;
    let h: u32 = it.next()?.parse().ok()?;
    let f: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(64..=16384).contains(&w) || !(64..=16384).contains(&h) || f > 1000 {
        return None;
    }
    Some((w, h, f))
}

/// `sessionUrl0`: `rtspenc://HOST:PORT` when the client can do encrypted RTSP, `rtsp://`
/// otherwise; IPv6 literals in brackets.
pub fn session_url(encrypted: bool, host: std::net::IpAddr, rtsp_port: u16) -> String {
    let scheme = if encrypted { "rtspenc" } else { "rtsp" };
    match host {
        std::net::IpAddr::V4(a) => format!("{scheme}://{a}:{rtsp_port}"),
        std::net::IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => format!("{scheme}://{v4}:{rtsp_port}"),
            None => format!("{scheme}://[{a}]:{rtsp_port}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(q: &str) -> Request {
        Request::from_target(&format!("/launch?{q}")).unwrap()
    }

    #[test]
    fn parses_what_moonlight_sends() {
        let r = LaunchRequest::parse(
            &req("uniqueid=0123456789ABCDEF&uuid=x&appid=1&mode=1920x1080x60&additionalStates=1&sops=0&rikey=00112233445566778899AABBCCDDEEFF&rikeyid=-1234567&localAudioPlayMode=0&surroundAudioInfo=196610&remoteControllersBitmap=1&gcmap=1&gcpersist=0&corever=1"),
            false,
        )
        .unwrap();
        assert_eq!(r.app_id, 1);
        assert_eq!(r.mode, Some((1920, 1080, 60)));
        assert_eq!(r.rikey[15], 0xFF);
        assert_eq!(r.rikey_id, -1234567);
        assert_eq!(r.channels(), 2);
        assert_eq!(r.gamepad_mask, 1);
        assert_eq!(r.core_version, 1);
        assert!(!format!("{r:?}").contains("rikey:"), "key not logged");
    }

    #[test]
    fn refuses_what_sunshine_refuses() {
        for q in [
            "appid=1&rikeyid=1&localAudioPlayMode=0",
            "appid=1&rikey=0011&rikeyid=1&localAudioPlayMode=0",
            "appid=1&rikey=00112233445566778899AABBCCDDEEFF&localAudioPlayMode=0",
            "rikey=00112233445566778899AABBCCDDEEFF&rikeyid=1&localAudioPlayMode=0",
            "appid=0&rikey=00112233445566778899AABBCCDDEEFF&rikeyid=1&localAudioPlayMode=0",
            "appid=1&rikey=00112233445566778899AABBCCDDEEFF&rikeyid=1",
            "appid=1&rikey=00112233445566778899AABBCCDDEEFF&rikeyid=1&localAudioPlayMode=0&mode=big",
        ] {
            let e = LaunchRequest::parse(&req(q), false).unwrap_err();
            assert_eq!(e.code(), 400, "{q}");
        }
        // /resume needs only the key.
        assert!(LaunchRequest::parse(
            &req("rikey=00112233445566778899AABBCCDDEEFF&rikeyid=5"),
            true
        )
        .is_ok());
    }

    #[test]
    fn session_urls() {
        assert_eq!(
            session_url(true, "10.0.0.2".parse().unwrap(), 48010),
            "rtspenc://10.0.0.2:48010"
        );
        assert_eq!(
            session_url(false, "fe80::1".parse().unwrap(), 48010),
            "rtsp://[fe80::1]:48010"
        );
        assert_eq!(
            session_url(false, "::ffff:10.0.0.2".parse().unwrap(), 1),
            "rtsp://10.0.0.2:1"
        );
        assert_eq!(parse_mode("1280x720x0"), Some((1280, 720, 0)));
        assert_eq!(parse_mode("1280x720"), None);
    }
}

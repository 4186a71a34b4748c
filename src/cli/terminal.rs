//! What the long-running commands show people on the terminal.

use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

/// A QR code drawn with unicode half blocks, light on dark like a phone
/// expects when scanning a terminal.
pub fn qr(code: &str) -> Result<String, String> {
    let qr = QrCode::new(code.as_bytes()).map_err(|e| format!("cannot draw the QR code: {e}"))?;
    Ok(qr
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_half_blocks() {
        let art = super::qr("2@abc,def").unwrap();
        assert!(art.lines().count() > 10);
        assert!(art.contains('▀') || art.contains('▄') || art.contains('█'));
    }
}

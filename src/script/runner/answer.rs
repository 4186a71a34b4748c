//! What `on_close` answers.

use mlua::Value;

use crate::lifecycle::CloseAnswer;

/// Reads `on_close`'s return value; `Ok(None)` is "no opinion".
pub fn decode_answer(v: &Value) -> Result<Option<CloseAnswer>, String> {
    let delay = |n: f64| -> Result<u64, String> {
        if n.is_finite() && n >= 0.0 {
            Ok(n as u64)
        } else {
            Err(format!(
                "on_close returned a delay of {n} ms; expected a number >= 0"
            ))
        }
    };
    match v {
        Value::Nil => Ok(None),
        Value::Boolean(false) => Ok(Some(CloseAnswer::Stay)),
        Value::Boolean(true) => Ok(Some(CloseAnswer::Reconnect { delay_ms: None })),
        Value::Integer(n) => Ok(Some(CloseAnswer::Reconnect {
            delay_ms: Some(delay(*n as f64)?),
        })),
        Value::Number(n) => Ok(Some(CloseAnswer::Reconnect {
            delay_ms: Some(delay(*n)?),
        })),
        Value::Table(t) => {
            let reconnect: Value = t.raw_get("reconnect").map_err(|e| e.to_string())?;
            let delay_ms: Value = t.raw_get("delay_ms").map_err(|e| e.to_string())?;
            let delay_ms = match delay_ms {
                Value::Nil => None,
                Value::Integer(n) => Some(delay(n as f64)?),
                Value::Number(n) => Some(delay(n)?),
                other => {
                    return Err(format!(
                        "on_close returned delay_ms = {}; expected a number",
                        other.type_name()
                    ));
                }
            };
            match reconnect {
                Value::Boolean(false) => Ok(Some(CloseAnswer::Stay)),
                Value::Boolean(true) | Value::Nil => Ok(Some(CloseAnswer::Reconnect { delay_ms })),
                other => Err(format!(
                    "on_close returned reconnect = {}; expected a boolean",
                    other.type_name()
                )),
            }
        }
        other => Err(format!(
            "on_close returned a {}; expected nil, a boolean, a number or a table",
            other.type_name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Lua;

    #[test]
    fn answers_decode_as_documented() {
        let lua = Lua::new();
        let eval = |src: &str| -> Value { lua.load(src).eval().unwrap() };
        assert_eq!(decode_answer(&eval("nil")), Ok(None));
        assert_eq!(decode_answer(&eval("false")), Ok(Some(CloseAnswer::Stay)));
        assert_eq!(
            decode_answer(&eval("true")),
            Ok(Some(CloseAnswer::Reconnect { delay_ms: None }))
        );
        assert_eq!(
            decode_answer(&eval("2500")),
            Ok(Some(CloseAnswer::Reconnect {
                delay_ms: Some(2500)
            }))
        );
        assert_eq!(
            decode_answer(&eval("12.9")),
            Ok(Some(CloseAnswer::Reconnect { delay_ms: Some(12) }))
        );
        assert_eq!(
            decode_answer(&eval("{reconnect=false, delay_ms=5}")),
            Ok(Some(CloseAnswer::Stay))
        );
        assert_eq!(
            decode_answer(&eval("{delay_ms=700}")),
            Ok(Some(CloseAnswer::Reconnect {
                delay_ms: Some(700)
            }))
        );
        assert!(decode_answer(&eval("-1")).is_err());
        assert!(
            decode_answer(&eval("'soon'"))
                .unwrap_err()
                .contains("string")
        );
        assert!(decode_answer(&eval("{reconnect='yes'}")).is_err());
    }
}

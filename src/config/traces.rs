//! Validated `tracing:` (OpenTelemetry traces over OTLP/HTTP) and the standard
//! `OTEL_*` variables that override it, so that existing collectors and charts
//! configure andera-lb the way they configure everything else.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `tracing:` — traces exported over OTLP/HTTP (protobuf). Off unless `endpoint`
/// (or `OTEL_EXPORTER_OTLP_ENDPOINT`) is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// The collector's base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`), e.g.
    /// `http://otel-collector:4318`; spans are POSTed to `<endpoint>/v1/traces`.
    /// Default none: tracing is off.
    pub endpoint: Option<String>,
    /// Headers sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`,
    /// `key=value,key=value`), e.g. a collector's API key. Never logged. Default none.
    pub headers: BTreeMap<String, String>,
    /// The `service.name` resource attribute (`OTEL_SERVICE_NAME`). Default `andera-lb`.
    pub service_name: String,
    /// `OTEL_TRACES_SAMPLER`: `parentbased_traceidratio` (default), `parentbased_always_on`,
    /// `parentbased_always_off`, `traceidratio`, `always_on` or `always_off`.
    pub sampler: String,
    /// `OTEL_TRACES_SAMPLER_ARG`: the ratio of new traces sampled, 0 to 1. Default 1.
    pub sampler_arg: f64,
    /// Ended spans waiting for export (`OTEL_BSP_MAX_QUEUE_SIZE`); beyond it a span is
    /// dropped and counted (`andera_lb_trace_spans_dropped_total`). Default 2048.
    pub max_queue_size: usize,
    /// Longest wait between exports, ms (`OTEL_BSP_SCHEDULE_DELAY`). Default 5000.
    pub batch_delay_ms: u64,
    /// Longest export request, ms (`OTEL_EXPORTER_OTLP_TIMEOUT`). Default 10000.
    pub export_timeout_ms: u64,
}

impl Default for TracingSection {
    fn default() -> Self {
        TracingSection {
            endpoint: None,
            headers: BTreeMap::new(),
            service_name: "andera-lb".into(),
            sampler: "parentbased_traceidratio".into(),
            sampler_arg: 1.0,
            max_queue_size: 2048,
            batch_delay_ms: 5000,
            export_timeout_ms: 10_000,
        }
    }
}

/// Which traces are recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerChoice {
    /// Follow the client's sampled flag when its `traceparent` has one.
    pub parent_based: bool,
    /// Ratio of the other traces that are sampled (`always_on` is 1, `always_off` 0).
    pub ratio: f64,
}

/// An export header: its value (perhaps a collector's key) never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct ExportHeader {
    /// The header name, lower-case.
    pub name: String,
    /// The value, for the export request only.
    pub value: String,
}

impl fmt::Debug for ExportHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <redacted>", self.name)
    }
}

/// Resolved tracing settings; present only when tracing is on.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Where spans are POSTed: `<endpoint>/v1/traces`.
    pub traces_url: String,
    /// The collector's `host:port`, for log lines (the URL may carry a secret).
    pub collector: String,
    /// Headers of every export request.
    pub headers: Vec<ExportHeader>,
    /// `service.name`.
    pub service_name: String,
    /// The sampler.
    pub sampler: SamplerChoice,
    /// Bound of the export queue, in spans.
    pub max_queue_size: usize,
    /// Longest wait between exports.
    pub batch_delay: Duration,
    /// Longest export request.
    pub export_timeout: Duration,
}

impl TracingSection {
    /// Validates the section: `None` when tracing is off (no endpoint). An error
    /// names the key.
    pub fn resolve(&self) -> Result<Option<TraceSettings>, (&'static str, String)> {
        let Some(endpoint) = self.endpoint.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if endpoint.is_empty() {
            return Ok(None);
        }
        let key = "tracing.endpoint / OTEL_EXPORTER_OTLP_ENDPOINT";
        let url = url::Url::parse(endpoint).map_err(|e| (key, format!("not a URL: {e}")))?;
        if url.scheme() != "http" {
            return Err((
                key,
                "must be an http:// URL (OTLP/HTTP without TLS: export to a local collector \
                 or sidecar, which may forward over TLS)"
                    .into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err((key, "must not have a query or a fragment".into()));
        }
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err((key, "names no host".into()));
        }
        let collector = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
        let traces_url = format!("{}/v1/traces", url.as_str().trim_end_matches('/'));
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            let key = "tracing.headers / OTEL_EXPORTER_OTLP_HEADERS";
            let name = name.trim().to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err((key, format!("{name:?} is not a header name")));
            }
            if http::HeaderValue::from_str(value.trim()).is_err() {
                // The value itself is never echoed: it may be a key.
                return Err((key, format!("the value of {name:?} cannot be sent")));
            }
            let value = value.trim().to_string();
            headers.push(ExportHeader { name, value });
        }
        let sampler = sampler_of(&self.sampler, self.sampler_arg)?;
        if self.service_name.trim().is_empty() {
            return Err((
                "tracing.service_name / OTEL_SERVICE_NAME",
                "must not be empty".into(),
            ));
        }
        if self.max_queue_size == 0 {
            return Err((
                "tracing.max_queue_size / OTEL_BSP_MAX_QUEUE_SIZE",
                "must be greater than 0".into(),
            ));
        }
        let positive = |key: &'static str, ms: u64| {
            (ms > 0)
                .then(|| Duration::from_millis(ms))
                .ok_or((key, "must be greater than 0".to_string()))
        };
        Ok(Some(TraceSettings {
            traces_url,
            collector,
            headers,
            service_name: self.service_name.trim().to_string(),
            sampler,
            max_queue_size: self.max_queue_size,
            batch_delay: positive(
                "tracing.batch_delay_ms / OTEL_BSP_SCHEDULE_DELAY",
                self.batch_delay_ms,
            )?,
            export_timeout: positive(
                "tracing.export_timeout_ms / OTEL_EXPORTER_OTLP_TIMEOUT",
                self.export_timeout_ms,
            )?,
        }))
    }
}

/// The sampler named `name` with `arg` (used by the ratio samplers only).
fn sampler_of(name: &str, arg: f64) -> Result<SamplerChoice, (&'static str, String)> {
    let (parent_based, ratio) = match name.trim().to_ascii_lowercase().as_str() {
        "always_on" => (false, 1.0),
        "always_off" => (false, 0.0),
        "traceidratio" => (false, arg),
        "parentbased_always_on" => (true, 1.0),
        "parentbased_always_off" => (true, 0.0),
        "parentbased_traceidratio" => (true, arg),
        other => {
            return Err((
                "tracing.sampler / OTEL_TRACES_SAMPLER",
                format!(
                    "{other:?} is not one of parentbased_traceidratio, parentbased_always_on, \
                     parentbased_always_off, traceidratio, always_on, always_off"
                ),
            ))
        }
    };
    if !(0.0..=1.0).contains(&ratio) {
        return Err((
            "tracing.sampler_arg / OTEL_TRACES_SAMPLER_ARG",
            format!("must be a ratio from 0 to 1, got {arg}"),
        ));
    }
    Ok(SamplerChoice {
        parent_based,
        ratio,
    })
}

/// Reads the standard variables over the YAML section (an empty value is unset).
pub(super) fn apply_env(
    t: &mut TracingSection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let var = |key: &str| {
        env(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let bad = |key: &str, reason: String| ConfigError {
        origin: "environment".into(),
        key: key.into(),
        reason,
    };
    if let Some(v) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        t.endpoint = Some(v);
    }
    if let Some(v) = var("OTEL_EXPORTER_OTLP_HEADERS") {
        t.headers = parse_headers(&v).map_err(|r| bad("OTEL_EXPORTER_OTLP_HEADERS", r))?;
    }
    if let Some(v) = var("OTEL_SERVICE_NAME") {
        t.service_name = v;
    }
    if let Some(v) = var("OTEL_TRACES_SAMPLER") {
        t.sampler = v;
    }
    if let Some(v) = var("OTEL_TRACES_SAMPLER_ARG") {
        t.sampler_arg = v
            .parse()
            .map_err(|_| bad("OTEL_TRACES_SAMPLER_ARG", format!("{v:?} is not a number")))?;
    }
    let whole = |key: &str, v: String| -> Result<u64, ConfigError> {
        v.parse()
            .map_err(|_| bad(key, format!("{v:?} is not a whole number")))
    };
    if let Some(v) = var("OTEL_BSP_MAX_QUEUE_SIZE") {
        t.max_queue_size = whole("OTEL_BSP_MAX_QUEUE_SIZE", v)? as usize;
    }
    if let Some(v) = var("OTEL_BSP_SCHEDULE_DELAY") {
        t.batch_delay_ms = whole("OTEL_BSP_SCHEDULE_DELAY", v)?;
    }
    if let Some(v) = var("OTEL_EXPORTER_OTLP_TIMEOUT") {
        t.export_timeout_ms = whole("OTEL_EXPORTER_OTLP_TIMEOUT", v)?;
    }
    Ok(())
}

/// `key=value,key=value` with percent-encoded values, as the OpenTelemetry
/// specification writes `OTEL_EXPORTER_OTLP_HEADERS`. The error never shows a value.
fn parse_headers(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            // Not echoed: it may be a key written without its name.
            return Err("an entry is not key=value".into());
        };
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| format!("the value of {:?} is not UTF-8", name.trim()))?;
        out.insert(name.trim().to_string(), value.into_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_env(pairs: &[(&str, &str)]) -> Result<Option<TraceSettings>, String> {
        let mut t = TracingSection::default();
        let env = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        apply_env(&mut t, &env).map_err(|e| e.to_string())?;
        t.resolve().map_err(|(k, r)| format!("{k}: {r}"))
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(with_env(&[]).unwrap(), None);
        assert_eq!(with_env(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        assert_eq!(
            with_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]).unwrap(),
            None
        );
    }

    #[test]
    fn the_standard_variables() {
        let s = with_env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=s%3Dcret, tenant = a ",
            ),
            ("OTEL_SERVICE_NAME", "lb-eu"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.traces_url, "http://collector:4318/v1/traces");
        assert_eq!(s.collector, "collector:4318");
        assert_eq!(s.service_name, "lb-eu");
        assert_eq!(
            s.sampler,
            SamplerChoice {
                parent_based: true,
                ratio: 0.01
            }
        );
        let headers: Vec<(&str, &str)> = s
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(headers, [("tenant", "a"), ("x-api-key", "s=cret")]);
        assert!(!format!("{s:?}").contains("cret"), "{s:?}");
        let defaults = with_env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c")])
            .unwrap()
            .unwrap();
        assert_eq!(defaults.traces_url, "http://c/v1/traces");
        assert_eq!(defaults.service_name, "andera-lb");
        assert_eq!(defaults.sampler.ratio, 1.0);
        assert_eq!(defaults.max_queue_size, 2048);
        let on = |name| {
            with_env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_TRACES_SAMPLER", name),
            ])
            .unwrap()
            .unwrap()
            .sampler
        };
        assert_eq!(on("always_off").ratio, 0.0);
        assert!(!on("always_on").parent_based);
        assert!(on("parentbased_always_off").parent_based);
    }

    #[test]
    fn bad_values_name_their_key_and_never_a_secret() {
        for (pairs, key) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")],
                "tracing.endpoint",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")],
                "tracing.endpoint",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_TRACES_SAMPLER", "sometimes"),
                ],
                "tracing.sampler",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "tracing.sampler_arg",
            ),
            (
                vec![("OTEL_TRACES_SAMPLER_ARG", "half")],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_HEADERS", "secretvalue")],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", "k=top\nsecret"),
                ],
                "tracing.headers",
            ),
        ] {
            let e = with_env(&pairs).unwrap_err();
            assert!(e.contains(key), "{pairs:?}: {e}");
            assert!(!e.contains("secret"), "{pairs:?}: {e}");
        }
    }
}

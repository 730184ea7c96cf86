//! Validated policy for failure notices posted to task webhooks (`webhook:` in the YAML).

use super::file::WebhookSection;

/// When and where the load balancer posts a webhook task's failure itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyPolicy {
    /// Post failures at all. Default false.
    pub enabled: bool,
    /// Allowed `host` or `host:port` entries, lower-case. Default empty.
    allowed_hosts: Vec<String>,
}

impl NotifyPolicy {
    /// Validates the YAML section; an error names the key.
    pub fn resolve(w: &WebhookSection) -> Result<NotifyPolicy, (&'static str, String)> {
        let allowed_hosts: Vec<String> = w
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        if let Some(bad) = allowed_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains('/') || h.contains('@'))
        {
            return Err((
                "webhook.allowed_hosts",
                format!("{bad:?} is not a host or host:port"),
            ));
        }
        if w.notify_failures && allowed_hosts.is_empty() {
            return Err((
                "webhook.notify_failures",
                "needs webhook.allowed_hosts: the load balancer only posts to hosts you list"
                    .into(),
            ));
        }
        Ok(NotifyPolicy {
            enabled: w.notify_failures,
            allowed_hosts,
        })
    }

    /// True if a failure notice may be posted to `host` on `port`.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.enabled
            && self
                .allowed_hosts
                .iter()
                .any(|allowed| *allowed == host || *allowed == format!("{host}:{port}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: bool, hosts: &[&str]) -> Result<NotifyPolicy, (&'static str, String)> {
        NotifyPolicy::resolve(&WebhookSection {
            notify_failures: on,
            allowed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        })
    }

    #[test]
    fn only_listed_hosts_and_only_when_on() {
        let p = policy(true, &["Hooks.example.com", "127.0.0.1:9000"]).unwrap();
        assert!(p.allows("hooks.example.com", 443));
        assert!(p.allows("127.0.0.1", 9000));
        assert!(!p.allows("127.0.0.1", 9001));
        assert!(!p.allows("169.254.169.254", 80));
        assert!(!policy(false, &["a"]).unwrap().allows("a", 80));
        assert_eq!(policy(true, &[]).unwrap_err().0, "webhook.notify_failures");
        assert_eq!(
            policy(false, &["http://x/"]).unwrap_err().0,
            "webhook.allowed_hosts"
        );
    }
}

//! What the harness reads from each node's `/metrics` (Prometheus text): partitions owned,
//! deliveries, takeovers. A node that was killed keeps its last scrape.

/// The metric names, as `tagcast::metrics` defines them.
const OWNED: &str = "tagcast_cluster_owned_partitions";
const TAKEOVERS: &str = "tagcast_cluster_takeovers_total";
const CLAIM_TAKEOVERS: &str = "tagcast_cluster_claim_takeovers_total";
const ANSWERS: &str = "tagcast_answers_total";

/// One scrape of one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct NodeMetrics {
    /// Partitions it owns (`tagcast_cluster_owned_partitions`).
    pub partitions: u64,
    /// Push-service answers classed delivered (`tagcast_answers_total{outcome="delivered"}`).
    pub delivered: u64,
    /// Partitions taken from an owner that stopped renewing.
    pub partition_takeovers: u64,
    /// Unfinished send claims of an older owner that this node's driver settled.
    pub claim_takeovers: u64,
}

impl NodeMetrics {
    /// Reads a `/metrics` page.
    pub fn parse(text: &str) -> NodeMetrics {
        let mut m = NodeMetrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, labels, value)) = split(line) else {
                continue;
            };
            // Counters and gauges are whole numbers here.
            let v = value.max(0.0).round() as u64;
            match name {
                OWNED => m.partitions += v,
                TAKEOVERS => m.partition_takeovers += v,
                CLAIM_TAKEOVERS => m.claim_takeovers += v,
                ANSWERS if label(labels, "outcome") == Some("delivered") => m.delivered += v,
                _ => {}
            }
        }
        m
    }
}

/// `name{labels} value` → (name, labels, value); `labels` may be empty.
fn split(line: &str) -> Option<(&str, &str, f64)> {
    let line = line.trim();
    let (head, value) = match line.find('}') {
        Some(end) => (&line[..=end], line[end + 1..].split_whitespace().next()?),
        None => {
            let mut it = line.split_whitespace();
            (it.next()?, it.next()?)
        }
    };
    let (name, labels) = match head.find('{') {
        Some(open) => (&head[..open], &head[open + 1..head.len() - 1]),
        None => (head, ""),
    };
    Some((name, labels, value.parse().ok()?))
}

/// The value of label `key` in `a="x",b="y"` (values here hold no quotes or commas).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cluster_metrics_of_a_page() {
        let page = "# HELP tagcast_answers_total Push-service answers\n\
                    # TYPE tagcast_answers_total counter\n\
                    tagcast_answers_total{platform=\"apns\",outcome=\"delivered\"} 1200\n\
                    tagcast_answers_total{platform=\"fcm\",outcome=\"delivered\"} 34\n\
                    tagcast_answers_total{platform=\"apns\",outcome=\"dead\"} 7\n\
                    tagcast_cluster_owned_partitions{hub=\"load\",node=\"node-1\"} 21\n\
                    tagcast_cluster_takeovers_total{hub=\"load\",node=\"node-1\"} 3\n\
                    tagcast_cluster_claim_takeovers_total{hub=\"load\"} 2\n\
                    tagcast_sends_total 5\n";
        assert_eq!(
            NodeMetrics::parse(page),
            NodeMetrics {
                partitions: 21,
                delivered: 1234,
                partition_takeovers: 3,
                claim_takeovers: 2,
            }
        );
        assert_eq!(NodeMetrics::parse(""), NodeMetrics::default());
    }
}

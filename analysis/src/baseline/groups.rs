//! Site groups (named CIDRs) by longest prefix, to name a baseline's peers.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Clone, Debug, Default)]
pub struct Groups(Vec<(String, IpNet)>);

impl Groups {
    /// From the site file's `groups`; entries that are not CIDRs or addresses are skipped (the
    /// policy validator reports them).
    pub fn from_site(site: &wardgate_policy::Site) -> Groups {
        let mut v = Vec::new();
        for (name, cidrs) in &site.groups {
            for c in cidrs {
                let net = c
                    .value
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| c.value.parse::<IpAddr>().ok().map(IpNet::from));
                if let Some(net) = net {
                    v.push((name.clone(), net));
                }
            }
        }
        Groups(v)
    }

    /// From (group name, CIDR or address) pairs (the controller's stored groups); entries that
    /// are neither are skipped, as in [`Groups::from_site`].
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Groups {
        Groups(
            pairs
                .into_iter()
                .filter_map(|(name, c)| {
                    let net = c
                        .parse::<IpNet>()
                        .ok()
                        .or_else(|| c.parse::<IpAddr>().ok().map(IpNet::from))?;
                    Some((name.to_string(), net))
                })
                .collect(),
        )
    }

    /// The group with the longest prefix holding `ip`.
    pub fn name(&self, ip: IpAddr) -> Option<&str> {
        self.0
            .iter()
            .filter(|(_, n)| n.contains(&ip))
            .max_by_key(|(_, n)| n.prefix_len())
            .map(|(g, _)| g.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &IpNet)> {
        self.0.iter().map(|(g, n)| (g.as_str(), n))
    }

    /// The networks of the group `name` (the site's resolvers: `dns`).
    pub fn nets(&self, name: &str) -> Vec<IpNet> {
        self.0
            .iter()
            .filter(|(g, _)| g == name)
            .map(|(_, n)| *n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_names_the_peer() {
        let site = wardgate_policy::parse_site(
            "s.yaml",
            "site: t\ngroups:\n  pacs: [198.51.100.0/24]\n  pacs-main: [198.51.100.5/32]\n  dns: [2001:db8::53]\n",
        )
        .unwrap();
        let g = Groups::from_site(&site);
        assert_eq!(g.name("198.51.100.5".parse().unwrap()), Some("pacs-main"));
        assert_eq!(g.name("198.51.100.6".parse().unwrap()), Some("pacs"));
        assert_eq!(g.name("2001:db8::53".parse().unwrap()), Some("dns"));
        assert_eq!(g.name("203.0.113.1".parse().unwrap()), None);
    }
}

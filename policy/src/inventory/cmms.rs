//! A CMMS (computerised maintenance management system) CSV export: a header row, then one
//! device per row, `,` or `;` separated (French exports use `;`), fields quoted as RFC 4180
//! says. The column mapping names which header holds each field, one `field = Header` per line
//! (or `;`-separated on one line, as a form field sends it); `mac` and `name` are required,
//! `type`, `manufacturer`, `model`, `location` (or `ward`), `asset_id` and `address` optional.
//! Without a mapping, headers named like the fields are used.

use super::{Entry, ImportError, Parsed, Refused, device_name, parse_mac};

/// The fields a mapping can name.
pub const FIELDS: &[&str] = &[
    "mac",
    "name",
    "type",
    "manufacturer",
    "model",
    "location",
    "asset_id",
    "address",
];

/// Field -> header, as the user gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping(pub Vec<(String, String)>);

impl Mapping {
    /// `mac = Adresse MAC` lines (or `;`-separated); `ward` is `location`; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Mapping, ImportError> {
        let mut out = Vec::new();
        for (i, line) in text.split(['\n', ';']).enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let Some((field, header)) = line.split_once('=').or_else(|| line.split_once(':'))
            else {
                return Err(ImportError::Csv(format!(
                    "mapping, item {}: `{line}` is not `field = column`",
                    i + 1
                )));
            };
            let field = match field.trim().to_ascii_lowercase().as_str() {
                "ward" => "location".to_string(),
                f => f.replace(['-', ' '], "_"),
            };
            if !FIELDS.contains(&field.as_str()) {
                return Err(ImportError::Csv(format!(
                    "mapping: unknown field `{field}` (one of {})",
                    FIELDS.join(", ")
                )));
            }
            if out.iter().any(|(f, _)| *f == field) {
                return Err(ImportError::Csv(format!(
                    "mapping: `{field}` is mapped twice"
                )));
            }
            out.push((field, header.trim().to_string()));
        }
        Ok(Mapping(out))
    }

    /// The column of each field in `header` (None: not mapped).
    fn columns(&self, header: &[String]) -> Result<[Option<usize>; 8], ImportError> {
        let find = |h: &str| header.iter().position(|c| c.trim().eq_ignore_ascii_case(h));
        let mut cols = [None; 8];
        for (i, field) in FIELDS.iter().enumerate() {
            cols[i] = match self.0.iter().find(|(f, _)| f == field) {
                Some((_, h)) => Some(find(h).ok_or_else(|| {
                    ImportError::Csv(format!(
                        "line 1: no column `{h}` (mapped to {field}) in the header"
                    ))
                })?),
                // Unmapped: a header named like the field (`ward` for location).
                None if self.0.is_empty() => find(field).or_else(|| match *field {
                    "location" => find("ward"),
                    _ => None,
                }),
                None => None,
            };
        }
        for required in ["mac", "name"] {
            let i = FIELDS.iter().position(|f| *f == required).unwrap_or(0);
            if cols[i].is_none() {
                return Err(ImportError::Csv(format!(
                    "line 1: no column for `{required}` (map it: `{required} = Header`)"
                )));
            }
        }
        Ok(cols)
    }
}

/// Splits CSV text into records of fields, with each record's first line number.
fn records(text: &str, sep: char) -> Result<Vec<(usize, Vec<String>)>, ImportError> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut record = Vec::new();
    let mut line = 1;
    let mut start = 1;
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            '\r' => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record[0].trim().is_empty()) {
                    out.push((start, std::mem::take(&mut record)));
                }
                record.clear();
                line += 1;
                start = line;
            }
            c if c == sep => record.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(ImportError::Csv(format!(
            "line {start}: a quoted field is not closed"
        )));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        out.push((start, record));
    }
    Ok(out)
}

/// Reads a CSV export with `mapping`.
pub fn parse(content: &[u8], mapping: &Mapping) -> Result<Parsed, ImportError> {
    let text = std::str::from_utf8(content)
        .map_err(|e| ImportError::Csv(format!("not UTF-8 text (byte {})", e.valid_up_to())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text); // Excel's byte-order mark
    let first = text.lines().next().unwrap_or("");
    let sep = if first.matches(';').count() > first.matches(',').count() {
        ';'
    } else {
        ','
    };
    let mut rows = records(text, sep)?.into_iter();
    let Some((_, header)) = rows.next() else {
        return Err(ImportError::Csv("line 1: no header row".into()));
    };
    let cols = mapping.columns(&header)?;
    let mut out = Parsed::default();
    for (line, row) in rows {
        let at = format!("line {line}");
        let get = |field: &str| -> &str {
            FIELDS
                .iter()
                .position(|f| *f == field)
                .and_then(|i| cols[i])
                .and_then(|c| row.get(c))
                .map_or("", |s| s.trim())
        };
        let refuse = |why: String| Refused {
            at: at.clone(),
            why,
        };
        let mac = match get("mac") {
            "" => {
                out.refused.push(refuse("mac: empty".into()));
                continue;
            }
            m => match parse_mac(m) {
                Ok(m) => m,
                Err(e) => {
                    out.refused.push(refuse(format!("mac: {e}")));
                    continue;
                }
            },
        };
        let name = device_name(get("name"));
        if name.is_empty() {
            out.refused.push(refuse("name: empty".into()));
            continue;
        }
        let address = match get("address") {
            "" => None,
            a => match a.parse() {
                Ok(a) => Some(a),
                Err(_) => {
                    out.refused
                        .push(refuse(format!("address: `{a}` is not an IP address")));
                    continue;
                }
            },
        };
        out.entries.push(Entry {
            at,
            mac,
            name,
            device_type: get("type").to_string(),
            manufacturer: get("manufacturer").to_string(),
            model: get("model").to_string(),
            location: get("location").to_string(),
            asset_id: get("asset_id").to_string(),
            address,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORT: &str = "\u{feff}N° inventaire;Désignation;Type;Fabricant;Modèle;Service;Adresse MAC;IP\r\n\
        BIO-004211;pump-icu-01;Pompe à perfusion;B. Braun;Space;Réanimation 3;00-1A-2B-3C-4D-01;192.0.2.41\r\n\
        BIO-004212;\"monitor icu 02\";Moniteur;\"Philips; Healthcare\";MX450;Réanimation 3;001a.2b3c.4d02;\r\n\
        BIO-004213;vent-icu-03;Respirateur;Dräger;V600;Réanimation 3;not-a-mac;192.0.2.43\r\n\
        BIO-004214;;Pousse-seringue;Fresenius;Agilia;Réanimation 3;00:1a:2b:3c:4d:04;\r\n";

    const MAPPING: &str = "mac = Adresse MAC\nname = Désignation\ntype = Type\n\
        manufacturer = Fabricant\nmodel = Modèle\nward = Service\nasset_id = N° inventaire\n\
        address = IP\n";

    #[test]
    fn a_french_export_with_a_mapping() {
        let p = parse(EXPORT.as_bytes(), &Mapping::parse(MAPPING).unwrap()).unwrap();
        assert_eq!(p.entries.len(), 2, "{:?}", p.refused);
        let pump = &p.entries[0];
        assert_eq!(
            (pump.name.as_str(), pump.mac.to_string().as_str()),
            ("pump-icu-01", "00:1a:2b:3c:4d:01")
        );
        assert_eq!(pump.device_type, "Pompe à perfusion");
        assert_eq!(pump.location, "Réanimation 3");
        assert_eq!(pump.asset_id, "BIO-004211");
        assert_eq!(pump.address, Some("192.0.2.41".parse().unwrap()));
        let monitor = &p.entries[1];
        assert_eq!(monitor.name, "monitor-icu-02");
        assert_eq!(monitor.manufacturer, "Philips; Healthcare");
        assert_eq!(monitor.at, "line 3");
        assert_eq!(p.refused.len(), 2);
        assert_eq!(p.refused[0].at, "line 4");
        assert!(p.refused[0].why.starts_with("mac: "), "{:?}", p.refused[0]);
        assert_eq!(p.refused[1].at, "line 5");
        assert_eq!(p.refused[1].why, "name: empty");
    }

    #[test]
    fn mapping_and_header_errors_name_what_is_wrong() {
        let m = Mapping::parse("mac = MAC; name = Name").unwrap();
        assert_eq!(m.0.len(), 2);
        assert!(
            matches!(Mapping::parse("colour = x"), Err(ImportError::Csv(e)) if e.contains("unknown field `colour`"))
        );
        assert!(matches!(Mapping::parse("mac"), Err(ImportError::Csv(e)) if e.contains("item 1")));
        assert!(
            matches!(parse(b"Name,Other\nx,y\n", &m), Err(ImportError::Csv(e)) if e.contains("no column `MAC`"))
        );
        assert!(matches!(parse(b"", &m), Err(ImportError::Csv(e)) if e.contains("no header")));
        assert!(
            matches!(parse(b"MAC,Name\n\"00:11", &m), Err(ImportError::Csv(e)) if e.contains("line 2"))
        );
        assert!(parse(&[0xff, 0xfe], &m).is_err());
        // No mapping: headers named like the fields.
        let p = parse(
            b"name,mac,ward\npump-1,00:1a:2b:3c:4d:09,ICU 3\n",
            &Mapping::default(),
        )
        .unwrap();
        assert_eq!(p.entries[0].location, "ICU 3");
    }
}

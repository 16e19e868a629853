//! French and English, chosen from the browser's Accept-Language: a small catalogue of every
//! string the pages show (no gettext), one struct per language so a missing message is a
//! compile error.

use axum::{extract::FromRequestParts, http::request::Parts};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Fr,
}

impl Lang {
    /// The best of fr and en in an Accept-Language value (`fr-FR,fr;q=0.9,en;q=0.8`): the
    /// highest quality wins, the first listed on a tie; English when neither is listed.
    pub fn from_accept_language(value: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for item in value.split(',') {
            let mut parts = item.trim().split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            let lang = match primary {
                "fr" => Lang::Fr,
                "en" => Lang::En,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, l)| l)
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
        }
    }

    pub fn messages(self) -> &'static Messages {
        match self {
            Lang::En => &EN,
            Lang::Fr => &FR,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .map_or(Lang::En, Lang::from_accept_language))
    }
}

/// Every string of the console's pages.
pub struct Messages {
    pub inventory: &'static str,
    pub sessions: &'static str,
    pub logout: &'static str,
    pub login_title: &'static str,
    pub login_button: &'static str,
    pub user_name: &'static str,
    pub password: &'static str,
    pub login_failed: &'static str,
    pub session_ended: &'static str,
    pub no_local_account: &'static str,
    pub search: &'static str,
    pub search_hint: &'static str,
    pub profile: &'static str,
    pub gateway: &'static str,
    pub mode: &'static str,
    pub baseline: &'static str,
    pub last_seen: &'static str,
    pub any: &'static str,
    pub none: &'static str,
    pub never: &'static str,
    pub filter: &'static str,
    pub device: &'static str,
    pub devices_found: &'static str,
    pub page: &'static str,
    pub of: &'static str,
    pub previous: &'static str,
    pub next: &'static str,
    pub no_device: &'static str,
    pub identity: &'static str,
    pub name: &'static str,
    pub device_id: &'static str,
    pub mac: &'static str,
    pub addresses: &'static str,
    pub location: &'static str,
    pub asset_id: &'static str,
    pub policy: &'static str,
    pub generation_latest: &'static str,
    pub generation_applied: &'static str,
    pub gateway_error: &'static str,
    pub findings: &'static str,
    pub no_findings: &'static str,
    pub severity: &'static str,
    pub detector: &'static str,
    pub summary: &'static str,
    pub acknowledged: &'static str,
    pub change_mode: &'static str,
    pub reason: &'static str,
    pub reason_hint: &'static str,
    pub apply: &'static str,
    pub mode_changed: &'static str,
    pub audit_entry: &'static str,
    pub forbidden: &'static str,
    pub not_found: &'static str,
    pub bad_request: &'static str,
    pub internal: &'static str,
    pub created: &'static str,
    pub signed_in_with: &'static str,
    pub state: &'static str,
    pub active: &'static str,
    pub revoked: &'static str,
    pub this_session: &'static str,
    pub yes: &'static str,
    pub no: &'static str,
    pub oidc_button: &'static str,
    pub break_glass: &'static str,
    pub too_many_logins: &'static str,
    pub oidc_failed: &'static str,
    pub oidc_state: &'static str,
    pub oidc_weak_acr: &'static str,
    pub oidc_no_role: &'static str,
    pub logged_in: &'static str,
    pub continue_label: &'static str,
    pub propose: &'static str,
    pub proposal: &'static str,
    pub rule_diff: &'static str,
    pub allowed_added: &'static str,
    pub allowed_removed: &'static str,
    pub no_rule_change: &'static str,
    pub simulate: &'static str,
    pub simulation: &'static str,
    pub flows_replayed: &'static str,
    pub would_block: &'static str,
    pub submit_for_approval: &'static str,
    pub pending_changes: &'static str,
    pub proposed_by: &'static str,
    pub approved_by: &'static str,
    pub approve: &'static str,
    pub own_change: &'static str,
    pub relogin_needed: &'static str,
    pub submitted: &'static str,
    pub warning: &'static str,
    pub approved_applied: &'static str,
    pub pending_state: &'static str,
    pub review: &'static str,
    pub change_title: &'static str,
}

pub static EN: Messages = Messages {
    inventory: "Inventory",
    sessions: "Sessions",
    logout: "Log out",
    login_title: "Log in to wardgate",
    login_button: "Log in",
    user_name: "User name",
    password: "Password",
    login_failed: "Wrong user name or password.",
    session_ended: "Your session has ended. Please log in again.",
    no_local_account: "No local account is configured on this controller.",
    search: "Search",
    search_hint: "name, MAC, address, asset id, location",
    profile: "Class (profile)",
    gateway: "Gateway",
    mode: "Mode",
    baseline: "Baseline",
    last_seen: "Last seen",
    any: "any",
    none: "none",
    never: "never",
    filter: "Filter",
    device: "Device",
    devices_found: "devices",
    page: "Page",
    of: "of",
    previous: "Previous",
    next: "Next",
    no_device: "No device matches.",
    identity: "Identity",
    name: "Name",
    device_id: "Device id",
    mac: "MAC",
    addresses: "Addresses",
    location: "Location",
    asset_id: "Asset id",
    policy: "Policy",
    generation_latest: "Latest generation",
    generation_applied: "Applied by the gateway",
    gateway_error: "Gateway error",
    findings: "Recent findings",
    no_findings: "No finding for this device.",
    severity: "Severity",
    detector: "Detector",
    summary: "Summary",
    acknowledged: "Acknowledged",
    change_mode: "Change the mode",
    reason: "Reason or ticket",
    reason_hint: "e.g. CHG-1234: commissioning",
    apply: "Apply",
    mode_changed: "Mode changed.",
    audit_entry: "audit entry",
    forbidden: "You are not allowed to do this.",
    not_found: "Not found.",
    bad_request: "The request was refused",
    internal: "Something went wrong on the controller; it is logged.",
    created: "Started",
    signed_in_with: "Signed in with",
    state: "State",
    active: "active",
    revoked: "ended",
    this_session: "this session",
    yes: "yes",
    no: "no",
    oidc_button: "Log in with Pro Santé Connect",
    break_glass: "Break-glass account",
    too_many_logins: "Too many failed logins from this address or for this name; logins are refused for a while. Minutes to wait:",
    oidc_failed: "The login through the identity provider failed",
    oidc_state: "This login link is unknown, already used or expired: start the login again",
    oidc_weak_acr: "Your login is not strong enough for this console (a card or e-CPS login is required)",
    oidc_no_role: "You are authenticated, but no role in this console is given to you: ask the biomedical engineering team",
    logged_in: "You are logged in.",
    continue_label: "Continue",
    propose: "Propose a profile from the baseline",
    proposal: "Proposed profile",
    rule_diff: "Rules against the current profile",
    allowed_added: "newly allowed",
    allowed_removed: "no longer allowed",
    no_rule_change: "No rule changes.",
    simulate: "Simulate",
    simulation: "Simulation over the recorded flows",
    flows_replayed: "flows replayed",
    would_block: "would be blocked",
    submit_for_approval: "Submit for approval",
    pending_changes: "Changes submitted for approval",
    proposed_by: "Proposed by",
    approved_by: "approved by",
    approve: "Approve and apply",
    own_change: "You proposed this change: another engineer must approve it.",
    relogin_needed: "Approving needs a login less than 15 minutes old: log out and log in again.",
    submitted: "Submitted for approval.",
    warning: "Warning",
    approved_applied: "Change approved and applied.",
    pending_state: "awaiting approval",
    review: "Review",
    change_title: "Change",
};

pub static FR: Messages = Messages {
    inventory: "Inventaire",
    sessions: "Sessions",
    logout: "Se déconnecter",
    login_title: "Connexion à wardgate",
    login_button: "Se connecter",
    user_name: "Identifiant",
    password: "Mot de passe",
    login_failed: "Identifiant ou mot de passe incorrect.",
    session_ended: "Votre session a pris fin. Veuillez vous reconnecter.",
    no_local_account: "Aucun compte local n'est configuré sur ce contrôleur.",
    search: "Rechercher",
    search_hint: "nom, MAC, adresse, n° d'inventaire, emplacement",
    profile: "Classe (profil)",
    gateway: "Passerelle",
    mode: "Mode",
    baseline: "Référence",
    last_seen: "Vu pour la dernière fois",
    any: "tous",
    none: "aucune",
    never: "jamais",
    filter: "Filtrer",
    device: "Équipement",
    devices_found: "équipements",
    page: "Page",
    of: "sur",
    previous: "Précédente",
    next: "Suivante",
    no_device: "Aucun équipement ne correspond.",
    identity: "Identité",
    name: "Nom",
    device_id: "Identifiant d'équipement",
    mac: "MAC",
    addresses: "Adresses",
    location: "Emplacement",
    asset_id: "N° d'inventaire",
    policy: "Politique",
    generation_latest: "Dernière génération",
    generation_applied: "Appliquée par la passerelle",
    gateway_error: "Erreur de la passerelle",
    findings: "Détections récentes",
    no_findings: "Aucune détection pour cet équipement.",
    severity: "Gravité",
    detector: "Détecteur",
    summary: "Résumé",
    acknowledged: "Acquittée",
    change_mode: "Changer le mode",
    reason: "Motif ou ticket",
    reason_hint: "ex. CHG-1234 : mise en service",
    apply: "Appliquer",
    mode_changed: "Mode modifié.",
    audit_entry: "entrée d'audit",
    forbidden: "Vous n'avez pas le droit de faire cela.",
    not_found: "Introuvable.",
    bad_request: "La demande a été refusée",
    internal: "Une erreur est survenue sur le contrôleur ; elle est journalisée.",
    created: "Ouverte",
    signed_in_with: "Connexion par",
    state: "État",
    active: "active",
    revoked: "terminée",
    this_session: "cette session",
    yes: "oui",
    no: "non",
    oidc_button: "Se connecter avec Pro Santé Connect",
    break_glass: "Compte de secours",
    too_many_logins: "Trop d'échecs de connexion depuis cette adresse ou pour cet identifiant ; les connexions sont refusées un moment. Minutes d'attente :",
    oidc_failed: "La connexion par le fournisseur d'identité a échoué",
    oidc_state: "Ce lien de connexion est inconnu, déjà utilisé ou expiré : recommencez la connexion",
    oidc_weak_acr: "Votre authentification n'est pas assez forte pour cette console (carte CPS ou e-CPS requise)",
    oidc_no_role: "Vous êtes authentifié, mais aucun rôle ne vous est attribué dans cette console : adressez-vous au service biomédical",
    logged_in: "Vous êtes connecté.",
    continue_label: "Continuer",
    propose: "Proposer un profil depuis la référence",
    proposal: "Profil proposé",
    rule_diff: "Règles par rapport au profil actuel",
    allowed_added: "nouvellement autorisé",
    allowed_removed: "plus autorisé",
    no_rule_change: "Aucun changement de règle.",
    simulate: "Simuler",
    simulation: "Simulation sur les flux enregistrés",
    flows_replayed: "flux rejoués",
    would_block: "seraient bloqués",
    submit_for_approval: "Soumettre pour approbation",
    pending_changes: "Changements soumis pour approbation",
    proposed_by: "Proposé par",
    approved_by: "approuvé par",
    approve: "Approuver et appliquer",
    own_change: "Vous avez proposé ce changement : un autre ingénieur doit l'approuver.",
    relogin_needed: "L'approbation demande une connexion de moins de 15 minutes : déconnectez-vous puis reconnectez-vous.",
    submitted: "Soumis pour approbation.",
    warning: "Attention",
    approved_applied: "Changement approuvé et appliqué.",
    pending_state: "en attente d'approbation",
    review: "Examiner",
    change_title: "Changement",
};

#[cfg(test)]
mod tests {
    use super::Lang;

    #[test]
    fn the_browser_language_picks_french_or_english() {
        for (header, want) in [
            ("fr-FR,fr;q=0.9,en;q=0.8", Lang::Fr),
            ("en-GB,en;q=0.9,fr;q=0.8", Lang::En),
            ("de-DE,fr;q=0.5", Lang::Fr),
            ("en;q=0.4,fr;q=0.6", Lang::Fr),
            ("de", Lang::En),
            ("fr;q=0", Lang::En),
            ("", Lang::En),
        ] {
            assert_eq!(Lang::from_accept_language(header), want, "{header}");
        }
    }
}

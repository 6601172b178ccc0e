#!/usr/bin/env bash
# The build checks itself: run by cloudbuild.yaml's last step, after both services are deployed.
#
#   1. the public frontend answers /_stcore/health 200 with no credentials at all;
#   2. the backend refuses a call without a token (401/403): it is private;
#   3. the backend answers /ready 200 to an identity token of the build's own service account;
#   4. the frontend's service account holds roles/run.invoker and roles/run.viewer on the backend.
#
# Checks 1-3 are retried together until VERIFY_TIMEOUT_S: IAM changes take minutes to reach Cloud Run
# (https://cloud.google.com/iam/docs/access-change-propagation), and a new backend instance loads its
# model before /ready says 200. Whatever is still wrong then is reported with the exact command (or org
# policy, or role) that fixes it, and the step exits 1, which fails the build.
#
# Environment (cloudbuild.yaml sets it): PROJECT_ID, REGION, BACKEND_SERVICE, FRONTEND_SERVICE,
# FRONTEND_SA (the frontend's service account e-mail); optional VERIFY_TIMEOUT_S (default 420),
# VERIFY_INTERVAL_S (default 10). Needs bash, curl and gcloud (the google-cloud-cli:*-slim image has all three).
set -euo pipefail

readonly PROGRAM="verify"
: "${PROJECT_ID:?PROJECT_ID is not set}"
: "${REGION:?REGION is not set}"
: "${BACKEND_SERVICE:?BACKEND_SERVICE is not set}"
: "${FRONTEND_SERVICE:?FRONTEND_SERVICE is not set}"
: "${FRONTEND_SA:?FRONTEND_SA (the frontend service account e-mail) is not set}"
TIMEOUT_S="${VERIFY_TIMEOUT_S:-420}"
INTERVAL_S="${VERIFY_INTERVAL_S:-10}"
[[ "$TIMEOUT_S" =~ ^[0-9]+$ ]] || { echo "$PROGRAM: VERIFY_TIMEOUT_S must be whole seconds, not '$TIMEOUT_S'" >&2; exit 2; }
# metadata.google.internal, or the host google-auth would use (GCE_METADATA_HOST), for the token fallback
METADATA_HOST="${GCE_METADATA_HOST:-metadata.google.internal}"

log() { printf '%s: %s\n' "$PROGRAM" "$*"; }

for tool in gcloud curl; do
  command -v "$tool" >/dev/null || { echo "$PROGRAM: $tool is not installed" >&2; exit 2; }
done

service_url() {
  gcloud run services describe "$1" --project="$PROJECT_ID" --region="$REGION" --format='value(status.url)'
}

# The HTTP status of GET url (000 when there is no answer), with an optional bearer token.
status_of() {
  local url=$1 token=${2:-}
  local -a auth=()
  [[ -n "$token" ]] && auth=(--header "Authorization: Bearer $token")
  curl --silent --output /dev/null --write-out '%{http_code}' --max-time 10 "${auth[@]}" "$url" || true
}

# An identity token of the account this runs as, for the backend's URL as audience: gcloud first, then
# the metadata server directly (what gcloud itself uses on Cloud Build); run by hand as a user account
# (which cannot choose an audience), gcloud's own token, which Cloud Run accepts from developers.
identity_token() {
  local audience=$1 token
  if token=$(gcloud auth print-identity-token --audiences="$audience" 2>/dev/null) && [[ -n "$token" ]]; then
    printf '%s' "$token"
    return 0
  fi
  if token=$(curl --silent --fail --max-time 10 --header 'Metadata-Flavor: Google' \
    "http://${METADATA_HOST}/computeMetadata/v1/instance/service-accounts/default/identity?audience=${audience}") \
    && [[ -n "$token" ]]; then
    printf '%s' "$token"
    return 0
  fi
  token=$(gcloud auth print-identity-token 2>/dev/null) && [[ -n "$token" ]] && printf '%s' "$token"
}

build_account() {
  local account
  account=$(gcloud config get-value account 2>/dev/null || true)
  printf '%s' "${account:-the build service account}"
}

failures=()
fail() { failures+=("$*"); }

# --- where the services are
frontend_url=$(service_url "$FRONTEND_SERVICE" || true)
backend_url=$(service_url "$BACKEND_SERVICE" || true)
for pair in "frontend:$FRONTEND_SERVICE:$frontend_url" "backend:$BACKEND_SERVICE:$backend_url"; do
  IFS=: read -r role name url <<<"$pair"
  if [[ -z "$url" ]]; then
    echo "$PROGRAM: FAILED: the $role service '$name' has no URL in $PROJECT_ID/$REGION (not deployed, or no permission" \
      "to read it: the build's account needs roles/run.viewer or roles/run.admin). Check: gcloud run services" \
      "describe $name --project=$PROJECT_ID --region=$REGION" >&2
    exit 1
  fi
done
frontend_url=${frontend_url%/}
backend_url=${backend_url%/}
log "frontend: $frontend_url"
log "backend:  $backend_url"
account=$(build_account)

# --- checks 1-3, retried together until each passes or time runs out
frontend_code="" backend_anonymous_code="" backend_token_code="" token=""
pending=(frontend backend_private backend_token)
deadline=$((SECONDS + TIMEOUT_S))
while :; do
  still=()
  for check in "${pending[@]}"; do
    case $check in
      frontend)
        frontend_code=$(status_of "$frontend_url/_stcore/health")
        [[ "$frontend_code" == 200 ]] || still+=("$check")
        ;;
      backend_private)
        backend_anonymous_code=$(status_of "$backend_url/ready")
        [[ "$backend_anonymous_code" == 401 || "$backend_anonymous_code" == 403 ]] || still+=("$check")
        ;;
      backend_token)
        [[ -n "$token" ]] || token=$(identity_token "$backend_url" || true)
        if [[ -z "$token" ]]; then
          backend_token_code="no-token"
        else
          backend_token_code=$(status_of "$backend_url/ready" "$token")
        fi
        [[ "$backend_token_code" == 200 ]] || still+=("$check")
        ;;
    esac
  done
  pending=("${still[@]+"${still[@]}"}")
  ((${#pending[@]} == 0)) && break
  if ((SECONDS >= deadline)); then
    break
  fi
  log "waiting $INTERVAL_S s (IAM changes take minutes; $((deadline - SECONDS)) s left):" \
    "frontend health=$frontend_code, backend without token=$backend_anonymous_code," \
    "backend with the build's token=$backend_token_code"
  sleep "$INTERVAL_S"
done

for check in "${pending[@]+"${pending[@]}"}"; do
  case $check in
    frontend)
      case $frontend_code in
        401 | 403)
          fail "the public frontend answered $frontend_code to a visitor without credentials: allUsers does not hold" \
            "roles/run.invoker on '$FRONTEND_SERVICE'. 'gcloud run deploy --allow-unauthenticated' only WARNS when" \
            "it cannot grant it, most often because the organization policy constraint" \
            "iam.allowedPolicyMemberDomains (Domain restricted sharing) refuses allUsers. Fix: have an organization" \
            "policy administrator allow allUsers for project $PROJECT_ID (an exception to" \
            "constraints/iam.allowedPolicyMemberDomains), then run: gcloud run services add-iam-policy-binding" \
            "$FRONTEND_SERVICE --project=$PROJECT_ID --region=$REGION --member=allUsers --role=roles/run.invoker" \
            "-- or, where your project may use it, turn the invoker check off instead: gcloud run services update" \
            "$FRONTEND_SERVICE --project=$PROJECT_ID --region=$REGION --no-invoker-iam-check"
          ;;
        000)
          fail "the frontend $frontend_url did not answer at all (DNS, TLS or network). Check ingress" \
            "(gcloud run services describe $FRONTEND_SERVICE --project=$PROJECT_ID --region=$REGION" \
            "--format='value(metadata.annotations)') and that the URL resolves."
          ;;
        *)
          fail "the frontend answered $frontend_code on /_stcore/health (not 200): the Streamlit server is not" \
            "healthy. Read its logs: gcloud run services logs read $FRONTEND_SERVICE --project=$PROJECT_ID" \
            "--region=$REGION --limit=100"
          ;;
      esac
      ;;
    backend_private)
      if [[ "$backend_anonymous_code" =~ ^2 ]]; then
        fail "the backend answered $backend_anonymous_code to a call WITHOUT a token: it is public, and anyone can" \
          "use your model at your cost. Make it private: gcloud run services remove-iam-policy-binding" \
          "$BACKEND_SERVICE --project=$PROJECT_ID --region=$REGION --member=allUsers --role=roles/run.invoker" \
          "(and deploy it with --no-allow-unauthenticated; if its invoker IAM check was turned off, also: gcloud" \
          "run services update $BACKEND_SERVICE --project=$PROJECT_ID --region=$REGION --invoker-iam-check)"
      else
        fail "the backend answered $backend_anonymous_code to a call without a token, expected 401 or 403 (the" \
          "platform refusing it). Read its logs: gcloud run services logs read $BACKEND_SERVICE" \
          "--project=$PROJECT_ID --region=$REGION --limit=100"
      fi
      ;;
    backend_token)
      case $backend_token_code in
        no-token)
          fail "could not mint an identity token for audience $backend_url as $account (gcloud auth" \
            "print-identity-token failed, with and without --audiences, and so did the metadata server). Run the" \
            "build with a service account (gcloud builds submit --service-account=...), as the README shows;" \
            "by hand, log in first (gcloud auth login)."
          ;;
        403)
          fail "the backend refused the build's identity token (403): $account may not invoke it. Grant" \
            "roles/run.invoker on the backend service: gcloud run services add-iam-policy-binding $BACKEND_SERVICE" \
            "--project=$PROJECT_ID --region=$REGION --member=serviceAccount:$account --role=roles/run.invoker" \
            "(roles/run.admin on the project, which the deployer has in docs/deploy.md, includes it)"
          ;;
        401)
          fail "the backend rejected the build's identity token (401): wrong audience or not a Google-signed ID" \
            "token. The audience must be the backend's run.app URL, $backend_url."
          ;;
        503 | 429 | 000)
          fail "the backend did not answer /ready 200 in $TIMEOUT_S s (last: $backend_token_code): the model did not" \
            "load or the instance did not start. Read its logs: gcloud run services logs read $BACKEND_SERVICE" \
            "--project=$PROJECT_ID --region=$REGION --limit=100"
          ;;
        *)
          fail "the backend answered $backend_token_code to /ready with the build's token, expected 200. Read its" \
            "logs: gcloud run services logs read $BACKEND_SERVICE --project=$PROJECT_ID --region=$REGION --limit=100"
          ;;
      esac
      ;;
  esac
done

# --- check 4: the frontend's identity may call the backend and read its URL (read once: no propagation)
if policy=$(gcloud run services get-iam-policy "$BACKEND_SERVICE" --project="$PROJECT_ID" --region="$REGION" \
  --flatten='bindings[].members' --format='value(bindings.role,bindings.members)' 2>&1); then
  for role in roles/run.invoker roles/run.viewer; do
    if ! grep -qE "^${role//./\\.}[[:space:]]+serviceAccount:${FRONTEND_SA//./\\.}\$" <<<"$policy"; then
      fail "the frontend's service account $FRONTEND_SA does not hold $role on '$BACKEND_SERVICE' (the page" \
        "would say the backend refused it, or could not find it). Fix: gcloud run services add-iam-policy-binding" \
        "$BACKEND_SERVICE --project=$PROJECT_ID --region=$REGION --member=serviceAccount:$FRONTEND_SA --role=$role"
    fi
  done
else
  fail "could not read the IAM policy of '$BACKEND_SERVICE' ($policy): the build's account $account needs" \
    "run.services.getIamPolicy (roles/run.admin or roles/run.viewer)."
fi

if ((${#failures[@]})); then
  for failure in "${failures[@]}"; do
    printf '%s: FAILED: %s\n\n' "$PROGRAM" "$failure" >&2
  done
  exit 1
fi
log "OK: the frontend is public, the backend is private and answers its callers, the frontend may call it."

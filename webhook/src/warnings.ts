// AdmissionReview `response.warnings`: the API server relays them to the client as HTTP Warning
// headers (kubectl prints them), and truncates or drops long or unprintable ones. Each entry
// here names the key and the problem, in printable ASCII, under 120 characters.

export const MAX_WARNING_LENGTH = 119;

/** Printable ASCII only: an ellipsis becomes `...`, anything else unprintable becomes `?`. */
function printable(text: string): string {
  return text.replace(/…/g, '...').replace(/[^\x20-\x7e]/g, '?');
}

export function warning(key: string, message: string): string {
  const text = printable(`${key}: ${message}`);
  return text.length > MAX_WARNING_LENGTH ? `${text.slice(0, MAX_WARNING_LENGTH - 3)}...` : text;
}

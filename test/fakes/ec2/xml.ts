/**
 * Just enough XML for EC2 Query responses: element trees with escaped text.
 * Lists are containers of `<item>` children, as EC2 answers them.
 */

export const EC2_NAMESPACE = 'http://ec2.amazonaws.com/doc/2016-11-15/';

export type XmlValue = string | number | boolean | undefined | XmlNode | XmlValue[];
export interface XmlNode {
  [element: string]: XmlValue;
}

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

function render(name: string, v: XmlValue): string {
  if (v === undefined) return '';
  if (Array.isArray(v)) return `<${name}>${v.map((x) => render('item', x)).join('')}</${name}>`;
  if (typeof v === 'object') {
    const inner = Object.entries(v)
      .map(([k, x]) => render(k, x))
      .join('');
    return `<${name}>${inner}</${name}>`;
  }
  return `<${name}>${escapeXml(String(v))}</${name}>`;
}

/** `<ActionResponse xmlns=…><requestId>…</requestId>…</ActionResponse>` */
export function responseXml(action: string, requestId: string, body: XmlNode): string {
  const inner = Object.entries(body)
    .map(([k, v]) => render(k, v))
    .join('');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="${EC2_NAMESPACE}"><requestId>${escapeXml(requestId)}</requestId>${inner}</${action}Response>`;
}

/** The EC2 error document: `<Response><Errors><Error><Code>…</Code><Message>…</Message></Error></Errors><RequestID>…</RequestID></Response>`. */
export function errorXml(code: string, message: string, requestId: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${escapeXml(code)}</Code><Message>${escapeXml(message)}</Message></Error></Errors><RequestID>${escapeXml(requestId)}</RequestID></Response>`;
}

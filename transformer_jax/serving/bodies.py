"""Request bodies: read and checked by hand, not by FastAPI's parser, so that every bad input
gets its own status and a message naming the field (413 too large; 422 not UTF-8, not JSON, a
missing, unknown or mistyped field, a lone surrogate). Every error body is
{"error": message, "status": code}.
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError


class HttpError(Exception):
  def __init__(self, status: int, message: str, headers: dict | None = None):
    super().__init__(message)
    self.status, self.message, self.headers = status, message, headers or {}


class TranslateRequest(BaseModel):
  model_config = ConfigDict(extra='forbid')
  texts: list[StrictStr]
  beam_size: StrictInt | None = None
  alpha: StrictFloat | StrictInt | None = None
  n_best: StrictInt | None = None


class AttentionRequest(BaseModel):
  model_config = ConfigDict(extra='forbid')
  source: StrictStr
  target: StrictStr | None = None  # None: the model's own translation (default decoding)


def field_name(loc) -> str:
  """('texts', 2) -> 'texts[2]'."""
  out = ''
  for part in loc:
    out += f'[{part}]' if isinstance(part, int) else (f'.{part}' if out else str(part))
  return out or 'body'


async def read_json(request: Request, model: type[BaseModel], max_bytes: int) -> Any:
  """The body as `model`, or the HttpError that says what is wrong with it."""
  declared = request.headers.get('content-length')
  if declared is not None and declared.isdigit() and int(declared) > max_bytes:
    raise HttpError(413, f'the body is {int(declared)} bytes; the limit is {max_bytes}')
  body = b''
  async for chunk in request.stream():
    body += chunk
    if len(body) > max_bytes:
      raise HttpError(413, f'the body is over {max_bytes} bytes, the limit')
  try:
    text = body.decode('utf-8')
  except UnicodeDecodeError as e:
    raise HttpError(422, f'the body is not UTF-8: byte {e.start} is 0x{body[e.start]:02x}; '
                         'send JSON encoded as UTF-8') from None
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise HttpError(422, f'the body is not JSON: {e.msg} at line {e.lineno} column '
                         f'{e.colno}') from None
  try:
    return model.model_validate(data)
  except ValidationError as e:
    first = e.errors()[0]
    problem = first['msg']
    if first['type'] == 'missing':
      problem = 'is required'
    elif first['type'] == 'extra_forbidden':
      problem = f'is not a field (fields: {", ".join(model.model_fields)})'
    raise HttpError(422, f'{field_name(first["loc"])}: {problem}') from None


def check_text(text: str, field: str) -> None:
  try:
    text.encode('utf-8')
  except UnicodeEncodeError as e:
    raise HttpError(422, f'{field}: character {e.start} is a lone surrogate '
                         f'({text[e.start]!a}), not text; send valid UTF-16 pairs') from None


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
  return JSONResponse({'error': message, 'status': status}, status_code=status, headers=headers)

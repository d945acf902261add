"""Multi30k de→en: the default en→de recipe with the direction swapped."""
from configs import multi30k


def get_config():
  config = multi30k.get_config()
  config.data.source_lang = 'de'
  config.data.target_lang = 'en'
  return config

"""Market data: ccxt client, store in Freqtrade's layout, live provider, local replay exchange."""
